"""Prediction on users' images (tools/predict.py): inputs, tiled prediction of instance and
semantic models, per-nucleus measurements, and the output folder."""

from .coco_results import coco_instance_results
from .input_files import collect_image_files, unique_output_names
from .measurements import MEASUREMENT_COLUMNS, measure_nuclei
from .prediction_writer import (
    OutputFolderError,
    PredictionWriter,
    check_output_dir,
    prepare_output_dir,
)
from .predictor import NucleiPrediction, NucleiPredictor
from .tile_duplicates import mask_iou, suppress_cross_tile_duplicates
from .tiling import Tile, tile_axis, tile_image

__all__ = [
    "MEASUREMENT_COLUMNS",
    "NucleiPrediction",
    "NucleiPredictor",
    "OutputFolderError",
    "PredictionWriter",
    "Tile",
    "coco_instance_results",
    "check_output_dir",
    "collect_image_files",
    "mask_iou",
    "measure_nuclei",
    "prepare_output_dir",
    "suppress_cross_tile_duplicates",
    "tile_axis",
    "tile_image",
    "unique_output_names",
]
