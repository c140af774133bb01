"""Nuclei metrics (foreground IoU / Dice, DSB score, AJI, PQ) and their Detectron2 evaluator."""

from .evaluators import build_nuclei_evaluators, format_results_table
from .nuclei_evaluator import NucleiEvaluator
from .nuclei_metrics import (
    DSB_IOU_THRESHOLDS,
    NUCLEI_METRIC_NAMES,
    coco_segmentation_to_rle,
    coco_segmentations_to_label_image,
    decode_coco_segmentation,
    image_nuclei_stats,
    masks_to_label_image,
    semantic_to_label_image,
    summarize_nuclei_stats,
)

__all__ = [
    "DSB_IOU_THRESHOLDS",
    "NUCLEI_METRIC_NAMES",
    "NucleiEvaluator",
    "build_nuclei_evaluators",
    "format_results_table",
    "coco_segmentation_to_rle",
    "coco_segmentations_to_label_image",
    "decode_coco_segmentation",
    "image_nuclei_stats",
    "masks_to_label_image",
    "semantic_to_label_image",
    "summarize_nuclei_stats",
]
