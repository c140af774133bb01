"""
Inference options a benchmark run can apply to every model it builds, alike for all compared
models: norms folded into convs (:func:`fold_conv_norms`) and channels-last memory.
"""

from typing import Callable

import torch

from .case import BenchmarkCase, Workload
from .norm_folding import fold_conv_norms

__all__ = ["with_inference_options"]


def _apply(workload: Workload, *, fold_norms: bool, channels_last: bool) -> Workload:
    if fold_norms:
        # FrozenBN / eval-mode BN of Detectron2 Conv2d layers only (smp's BatchNorm2d layers
        # are separate modules and stay): use it on the Mask R-CNN suites.
        folded = fold_conv_norms(workload.module.eval())
        workload.notes = dict(getattr(workload, "notes", {}), folded_norms=folded)
    if channels_last:
        workload.module.to(memory_format=torch.channels_last)
        images = getattr(workload, "images", None)
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            workload.images = images.contiguous(memory_format=torch.channels_last)
    return workload


def with_inference_options(case: BenchmarkCase, *, fold_norms: bool, channels_last: bool):
    """
    ``case`` with its ``build`` wrapped to apply the options, and the options in its notes.
    A case with folded norms has no training step (folding is for inference only).
    """
    if not (fold_norms or channels_last):
        return case
    build: Callable[[], Workload] = case.build
    case.build = lambda: _apply(build(), fold_norms=fold_norms, channels_last=channels_last)
    case.notes = dict(case.notes, fold_norms=fold_norms, channels_last=channels_last)
    if fold_norms:
        case.train = False
    return case
