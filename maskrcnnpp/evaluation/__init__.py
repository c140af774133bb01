"""Nuclei metrics (foreground IoU / Dice, DSB score, AJI, PQ) and their Detectron2 evaluator."""

from .evaluators import build_nuclei_evaluators, format_results_table
from .nuclei_evaluator import NucleiEvaluator
from .nuclei_metrics import (
    DSB_IOU_THRESHOLDS,
    NUCLEI_METRIC_NAMES,
    image_nuclei_stats,
    summarize_nuclei_stats,
)

__all__ = [
    "DSB_IOU_THRESHOLDS",
    "NUCLEI_METRIC_NAMES",
    "NucleiEvaluator",
    "build_nuclei_evaluators",
    "format_results_table",
    "image_nuclei_stats",
    "summarize_nuclei_stats",
]
