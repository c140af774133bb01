"""
The work behind the napari "Segment nuclei" widget, without Qt: the model from a shipped name
or a config + weights file, a layer's pixels as the image the model takes, and the outputs
written as ``tools/predict.py`` writes them. Prediction itself is
:class:`maskrcnnpp.inference.NucleiPredictor`, as in the tool.
"""

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..config.setup import setup_cfg
from ..data.image_io import _to_uint8
from ..inference.measurements import measure_nuclei
from ..inference.prediction_writer import PredictionWriter, check_output_dir, prepare_output_dir
from ..inference.predictor import NucleiPrediction, NucleiPredictor
from ..utils.folder_lock import exclusive_folder
from .reader import nuclei_features

__all__ = [
    "ALL_COLOURS",
    "ModelCache",
    "channel_choices",
    "layer_image_rgb",
    "model_config",
    "prediction_layer_features",
    "save_prediction",
]

# The channel choice of an RGB layer that keeps all three colours (as tools/predict.py
# without --channel).
ALL_COLOURS = None
_COLOUR_NAMES = ("red", "green", "blue")


def channel_choices(shape: Sequence[int], rgb: bool) -> List[Tuple[str, Optional[int]]]:
    """
    The channels a layer of ``shape`` offers, as (text, value) pairs for a combo box.

    * (H, W) gray: one choice, the image as it is (None);
    * (H, W, 3 or 4) RGB(A) (``rgb``): all colours (None), or one colour by index;
    * (C, H, W) stack: one channel by index (the first axis is the channels).
    """
    if len(shape) == 2:
        return [("gray image", None)]
    if rgb and len(shape) == 3:
        return [("all colours (RGB)", ALL_COLOURS)] + [
            (f"{i}: {name}", i) for i, name in enumerate(_COLOUR_NAMES)
        ]
    if len(shape) == 3:
        return [(f"channel {i}", i) for i in range(shape[0])]
    raise ValueError(
        f"a layer of shape {tuple(shape)}: choose a 2-D image, an RGB image or a (channel, Y, X) "
        "stack"
    )


def layer_image_rgb(data, *, rgb: bool, channel: Optional[int]) -> np.ndarray:
    """
    A layer's pixels as the (H, W, 3) uint8 RGB image the model takes, converted as
    ``tools/predict.py`` converts a file (:func:`maskrcnnpp.data.image_io.read_image_rgb`):
    a chosen channel or colour is a grayscale image; pixels that are not 8-bit are
    min/max-stretched; gray is replicated to three channels; alpha is dropped.

    Args:
        data (array-like): the layer's data, (H, W), (H, W, 3 or 4) with ``rgb``, or
            (C, H, W).
        rgb (bool): the layer is RGB(A) (napari's ``Image.rgb``).
        channel (int or None): see :func:`channel_choices`.
    """
    data = np.asarray(data)
    valid = [value for _, value in channel_choices(data.shape, rgb)]
    if channel not in valid:
        raise ValueError(
            f"channel {channel!r} is not one of the layer's (shape {data.shape}): "
            f"{', '.join(map(str, valid))}"
        )
    if channel is not None:
        data = data[..., channel] if rgb else data[channel]
    image = _to_uint8(data)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def model_config(
    *, model_name: str = "", config_file: str = "", weights: str = "", score_thresh: float
):
    """
    The frozen config of a shipped model (``model_name``, see :mod:`maskrcnnpp.model_zoo`) or
    of ``config_file`` with ``weights`` (MODEL.WEIGHTS), with TEST.PREDICT.SCORE_THRESH set.

    Raises:
        KeyError / ValueError / FileNotFoundError: naming the unknown model, the bad config
            file or key, the missing weights file.
    """
    if model_name:
        from .. import model_zoo

        cfg = model_zoo.get_config(model_name)
    elif config_file:
        if not weights:
            raise ValueError(f"no weights file given for the config {config_file}")
        cfg = setup_cfg(config_file, ["MODEL.WEIGHTS", weights], freeze=False)
    else:
        raise ValueError("choose a shipped model, or a config file and its weights")
    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"score threshold {score_thresh} must lie in [0, 1]")
    cfg.TEST.PREDICT.SCORE_THRESH = float(score_thresh)
    cfg.freeze()
    return cfg


class ModelCache:
    """Keeps the last model built, so that runs with the same model and weights (another
    layer, another threshold) skip building it and loading the weights."""

    def __init__(self):
        self._key = None
        self._model = None

    def predictor(self, cfg) -> NucleiPredictor:
        """A :class:`NucleiPredictor` of ``cfg``, its model reused when ``cfg``'s model and
        weights (and the weights file's modification time) are those of the last call."""
        weights = cfg.MODEL.WEIGHTS
        mtime = os.path.getmtime(weights) if os.path.isfile(weights) else None
        cfg_model = cfg.clone()
        cfg_model.defrost()
        cfg_model.TEST.PREDICT.SCORE_THRESH = 0.0  # the threshold only filters the outputs
        key = (cfg_model.dump(), mtime)
        if key != self._key:
            self._key, self._model = None, None
            predictor = NucleiPredictor(cfg)
            self._key, self._model = key, predictor.model
            return predictor
        return NucleiPredictor(cfg, model=self._model)


def prediction_layer_features(prediction: NucleiPrediction, image: np.ndarray):
    """The features table of the prediction's labels layer: the measurements that
    ``tools/predict.py`` writes into the CSV (see :func:`nuclei_features`)."""
    return nuclei_features(measure_nuclei(prediction.labels, prediction.scores, image))


def save_prediction(
    output_dir: str,
    name: str,
    file_name: str,
    image: np.ndarray,
    prediction: NucleiPrediction,
    *,
    extra_outputs: Sequence[str] = (),
    overwrite: bool = False,
) -> int:
    """
    Write one image's prediction into ``output_dir`` as a run of ``tools/predict.py`` on that
    image alone would (same layout, files and checks of the folder).

    Args:
        name (str): the output file stem (``labels/<name>.png`` ...).
        file_name (str): the image's source, recorded in ``coco_images.json``.
        image (ndarray): the (H, W, 3) uint8 RGB image predicted on.
        extra_outputs, overwrite: as tools/predict.py's ``--extra-outputs`` and
            ``--overwrite``.

    Returns:
        int: the number of nuclei written.

    Raises:
        OutputFolderError: the folder is a file, read-only, or not empty without
            ``overwrite``; FolderInUseError: another run writes there (nothing is written
            then).
    """
    writer = PredictionWriter(output_dir, extra_outputs)
    with exclusive_folder(output_dir):
        check_output_dir(output_dir, overwrite=overwrite)
        prepare_output_dir(output_dir, overwrite=overwrite)
        num_nuclei = writer.write_image(1, name, file_name, image, prediction)
        writer.close()
    return num_nuclei
