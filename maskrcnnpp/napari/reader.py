"""
napari reader of ``tools/predict.py``'s output folder (layout:
:mod:`maskrcnnpp.inference.prediction_writer`): per image, an image layer and a labels layer
``"<name> nuclei"`` whose ``features`` are the image's measurements CSV (one row per nucleus,
column ``index`` the label, as napari maps label values to rows).

Opens the whole folder (every image of ``coco_images.json``) or one image's outputs, given as
its ``measurements/<name>.csv``. The image layer is the input file recorded in
``coco_images.json``, read as the prediction read it (8-bit RGB); where that file is gone (a
folder moved to another machine, a relative path from elsewhere) the overlay
``overlays/<name>.png`` stands in, named ``"<name> overlay"``.
"""

import csv
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.image_io import ImageReadError, read_image_rgb, read_label_image
from ..inference.input_files import unique_output_names
from ..inference.measurements import MEASUREMENT_COLUMNS

__all__ = ["get_reader", "nuclei_features", "read_prediction_outputs"]

logger = logging.getLogger(__name__)

# (data, layer keyword arguments, layer type): napari's LayerData tuple
LayerData = Tuple[np.ndarray, Dict, str]

_IMAGES_FILE = "coco_images.json"
# Columns of the measurements CSV that hold integers (the others are floats).
_INTEGER_COLUMNS = ("label", "area", "bbox_x", "bbox_y", "bbox_width", "bbox_height")


def _prediction_target(path: str) -> Optional[Tuple[str, Optional[str]]]:
    """(output folder, one image's name or None for all) when ``path`` is a prediction
    output folder or a measurements CSV inside one; else None."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, _IMAGES_FILE)) and os.path.isdir(
            os.path.join(path, "labels")
        ):
            return path, None
        return None
    folder, file_name = os.path.split(path)
    output_dir = os.path.dirname(folder)
    if (
        file_name.endswith(".csv")
        and os.path.basename(folder) == "measurements"
        and os.path.isfile(os.path.join(output_dir, _IMAGES_FILE))
    ):
        return output_dir, file_name[: -len(".csv")]
    return None


def get_reader(path):
    """npe2 reader hook: :func:`read_prediction_outputs` for an output folder of
    tools/predict.py or a measurements CSV in one, None for anything else."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if _prediction_target(os.fspath(path)) is None:
        return None
    return read_prediction_outputs


def nuclei_features(rows: List[Dict], csv_path: str = "measurements") -> Dict[str, np.ndarray]:
    """
    The features table of a labels layer from measurement rows.

    Args:
        rows (list[dict]): one per nucleus in label order, keys :data:`MEASUREMENT_COLUMNS`
            (values as numbers or as the CSV's text).
        csv_path (str): where the rows come from, for error messages.

    Returns:
        dict[str, ndarray]: one (K,) column per measurement, plus ``index`` (= ``label``).
    """
    if rows and set(rows[0]) != set(MEASUREMENT_COLUMNS):
        raise ValueError(
            f"{csv_path}: columns {sorted(rows[0])} are not the measurements' "
            f"{list(MEASUREMENT_COLUMNS)}"
        )
    features = {
        column: np.array(
            [row[column] for row in rows],
            dtype=np.int64 if column in _INTEGER_COLUMNS else np.float64,
        )
        for column in MEASUREMENT_COLUMNS
    }
    features["index"] = features["label"].copy()
    return features


def _read_features(csv_path: str, num_labels: int) -> Dict[str, np.ndarray]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    features = nuclei_features(rows, csv_path)
    if not np.array_equal(features["label"], np.arange(1, num_labels + 1)):
        raise ValueError(
            f"{csv_path}: {len(rows)} row(s) do not describe labels 1..{num_labels} of the "
            "label image in order (files from different runs?)"
        )
    return features


def _image_files_by_name(output_dir: str) -> Dict[str, str]:
    """Output name -> the input file recorded for it in coco_images.json."""
    with open(os.path.join(output_dir, _IMAGES_FILE)) as f:
        images = sorted(json.load(f)["images"], key=lambda image: image["id"])
    files = [image["file_name"] for image in images]
    return dict(zip(unique_output_names(files), files))


def _image_layer(output_dir: str, name: str, input_file: Optional[str]) -> LayerData:
    if input_file is not None:
        try:
            return read_image_rgb(input_file), {"name": name, "rgb": True}, "image"
        except ImageReadError as e:
            logger.warning("%s; showing the overlay of %s instead", e, name)
    overlay = read_image_rgb(os.path.join(output_dir, "overlays", name + ".png"))
    return overlay, {"name": f"{name} overlay", "rgb": True}, "image"


def read_prediction_outputs(path) -> List[LayerData]:
    """
    Args:
        path (str or list[str]): a prediction output folder, or ``measurements/<name>.csv``
            in one.

    Returns:
        list[LayerData]: per image (in ``labels/`` order), the image layer and the labels
        layer ``"<name> nuclei"`` with its measurements as ``features``.
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    target = _prediction_target(os.fspath(path))
    if target is None:
        raise ValueError(f"{path}: not an output folder of tools/predict.py (no {_IMAGES_FILE})")
    output_dir, only = target
    if only is None:
        names = sorted(
            os.path.splitext(entry)[0]
            for entry in os.listdir(os.path.join(output_dir, "labels"))
            if entry.endswith((".png", ".tif")) and not entry.startswith(".")
        )
    else:
        names = [only]
    input_files = _image_files_by_name(output_dir)
    layers = []
    for name in names:
        # labels/<name>.png, or .tif (32-bit) for an image with more than 65535 nuclei
        png = os.path.join(output_dir, "labels", name + ".png")
        labels = read_label_image(
            png if os.path.isfile(png) else os.path.join(output_dir, "labels", name + ".tif")
        )
        features = _read_features(
            os.path.join(output_dir, "measurements", name + ".csv"), int(labels.max(initial=0))
        )
        layers.append(_image_layer(output_dir, name, input_files.get(name)))
        metadata = {"prediction_folder": output_dir, "input_file": input_files.get(name)}
        layers.append(
            (
                labels,
                {"name": f"{name} nuclei", "features": features, "metadata": metadata},
                "labels",
            )
        )
    return layers
