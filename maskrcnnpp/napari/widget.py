"""
napari's "Segment nuclei" widget (Plugins > Mask R-CNN++ nuclei > Segment nuclei): a shipped
model by name or a config + weights file, the image layer and its channel, the score
threshold; the prediction runs in a worker thread (napari's activity dock shows its progress:
model ready, nuclei predicted, measured and saved) and adds a labels layer
``"<layer> nuclei"`` whose features are the measurements of tools/predict.py's CSV. With
"save outputs" it also writes the output folder of ``tools/predict.py`` for that image (same
files, same refusal of a non-empty folder without "overwrite").
"""

import os
from typing import Optional

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
)
from napari.qt.threading import create_worker

from ..inference.input_files import unique_output_names
from ..inference.prediction_writer import EXTRA_OUTPUTS, check_output_dir
from .segmentation import (
    ModelCache,
    channel_choices,
    layer_image_rgb,
    model_config,
    prediction_layer_features,
    save_prediction,
)

__all__ = ["SegmentNucleiWidget"]

# The model combo box's entry for a config + weights file of one's own.
CONFIG_AND_WEIGHTS = "config + weights file"


def _shipped_models():
    from .. import model_zoo

    return model_zoo.list_models()


def _full_resolution(layer):
    """The layer's pixels: its data, or the first (full-resolution) level of a multiscale
    layer."""
    return layer.data[0] if layer.multiscale else layer.data


def _path_text(file_edit: FileEdit) -> str:
    """The path in a FileEdit, "" when empty (magicgui gives Path('.') then)."""
    text = str(file_edit.value or "")
    return "" if text in ("", ".") else text


class SegmentNucleiWidget(Container):
    """The widget; ``run()`` starts a segmentation of the chosen layer and returns its worker
    (None when the choices are refused: the reason is in ``status``). The run button is
    disabled while it runs; ``error`` holds the exception of a run that failed."""

    def __init__(self, viewer: "napari.viewer.Viewer"):
        super().__init__()
        self._viewer = viewer
        self._models = ModelCache()
        self.error: Optional[BaseException] = None  # of the last run, None when it worked
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.channel = ComboBox(label="channel", choices=self._channel_choices)
        self.model = ComboBox(label="model", choices=[*_shipped_models(), CONFIG_AND_WEIGHTS])
        self.config_file = FileEdit(label="config file", mode="r", filter="*.yaml")
        self.weights = FileEdit(label="weights", mode="r", filter="*.pth *.pkl")
        self.score_threshold = FloatSpinBox(
            label="score threshold", min=0.0, max=1.0, step=0.05, value=0.5
        )
        self.save = CheckBox(text="save outputs as tools/predict.py", value=False)
        self.output_dir = FileEdit(label="output folder", mode="d")
        self.extra_outputs = {
            name: CheckBox(text=f"also {name} ({folder}/)", value=False)
            for name, (folder, _) in EXTRA_OUTPUTS.items()
        }
        self.overwrite = CheckBox(text="overwrite a previous run's outputs there", value=False)
        self.run_button = PushButton(text="Segment nuclei")
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.channel,
                self.model,
                self.config_file,
                self.weights,
                self.score_threshold,
                self.save,
                self.output_dir,
                *self.extra_outputs.values(),
                self.overwrite,
                self.run_button,
                self.status,
            ]
        )
        self.image.changed.connect(self.channel.reset_choices)
        self.model.changed.connect(self._show_model_files)
        self.save.changed.connect(self._show_save_options)
        self.run_button.changed.connect(self.run)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._show_model_files()
        self._show_save_options()

    # ----------------------------------------------------------------------------------------
    # choices

    def _image_layers(self, _widget=None):
        return [layer for layer in self._viewer.layers if isinstance(layer, napari.layers.Image)]

    def _channel_choices(self, _widget=None):
        layer = self.image.value
        if layer is None:
            return []
        try:
            return channel_choices(_full_resolution(layer).shape, layer.rgb)  # (text, value)
        except ValueError:
            return []

    def _show_model_files(self):
        own = self.model.value == CONFIG_AND_WEIGHTS
        self.config_file.visible = own
        self.weights.visible = own

    def _show_save_options(self):
        for widget in (self.output_dir, *self.extra_outputs.values(), self.overwrite):
            widget.visible = self.save.value

    # ----------------------------------------------------------------------------------------
    # the run

    def _report(self, message: str, error: bool = False):
        self.status.value = message
        if error:
            napari.utils.notifications.show_error(message)

    def run(self):
        """Start segmenting the chosen layer; returns the worker, or None (reason in
        ``status``)."""
        layer = self.image.value
        if layer is None:
            self._report("no image layer to segment", error=True)
            return None
        data = _full_resolution(layer)
        try:
            channel_choices(data.shape, layer.rgb)  # refuses 4-D layers
        except ValueError as e:
            self._report(f"{layer.name}: {e}", error=True)
            return None
        own = self.model.value == CONFIG_AND_WEIGHTS
        model = {
            "model_name": "" if own else self.model.value,
            "config_file": _path_text(self.config_file) if own else "",
            "weights": _path_text(self.weights) if own else "",
            "score_thresh": self.score_threshold.value,
        }
        save = None
        if self.save.value:
            output_dir = _path_text(self.output_dir)
            try:
                if not output_dir:
                    raise ValueError("choose an output folder to save into")
                check_output_dir(output_dir, overwrite=self.overwrite.value)  # before the work
            except ValueError as e:
                self._report(str(e), error=True)
                return None
            source = layer.source.path
            save = {
                "output_dir": output_dir,
                "name": unique_output_names([source or layer.name])[0],
                "file_name": source or f"napari layer {layer.name}",
                "extra_outputs": [name for name, box in self.extra_outputs.items() if box.value],
                "overwrite": self.overwrite.value,
            }
        worker = create_worker(
            _segment,
            self._models,
            data,
            layer.rgb,
            self.channel.value,
            model,
            save,
            _progress={"total": 3, "desc": f"Segment nuclei: {layer.name}"},
        )
        worker.returned.connect(lambda result: self._add_labels(layer, result, model, save))
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: setattr(self.run_button, "enabled", True))
        self.run_button.enabled = False
        self.error = None
        self._report(f"segmenting {layer.name} ...")
        worker.start()
        return worker

    def _failed(self, error: BaseException):
        self.error = error
        self._report(f"{type(error).__name__}: {error}", error=True)

    def _add_labels(self, layer, result, model, save: Optional[dict]):
        prediction, features = result
        labels = self._viewer.add_labels(
            prediction.labels,
            name=f"{layer.name} nuclei",
            features=features,
            scale=layer.scale[-2:],
            translate=layer.translate[-2:],
            metadata={"model": model, "channel": self.channel.value, "saved": save},
        )
        where = f"; saved in {os.path.abspath(save['output_dir'])}" if save else ""
        self._report(f"{len(prediction.scores)} nuclei in {layer.name}{where}")
        return labels


def _segment(models: ModelCache, data, rgb: bool, channel, model: dict, save: Optional[dict]):
    """The worker thread: yields once per step (model ready, predicted, measured and
    saved) and returns (NucleiPrediction, features)."""
    image = layer_image_rgb(data, rgb=rgb, channel=channel)
    predictor = models.predictor(model_config(**model))
    yield
    prediction = predictor(image)
    yield
    features = prediction_layer_features(prediction, image)
    if save is not None:
        save_prediction(image=image, prediction=prediction, **save)
    yield
    return prediction, features
