"""Datasets (DSB2018, synthetic nuclei, folders of label images), image reading and dataset
mappers."""

from . import (
    dsb2018,  # noqa: F401  registers dsb2018_<split> / dsb2018_sem_seg_<split>
    synthetic_nuclei,  # noqa: F401  registers nuclei_synth_train / nuclei_synth_val
)
from .label_folder import register_label_folder

__all__ = ["register_label_folder"]
