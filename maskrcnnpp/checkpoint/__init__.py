"""Checkpoints: written atomically, loaded with a check that every model weight was found."""

from .checkpointer import AtomicDetectionCheckpointer, WeightsError, load_model_weights

__all__ = ["AtomicDetectionCheckpointer", "WeightsError", "load_model_weights"]
