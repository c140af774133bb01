"""Training: the trainer (DDP on any device, bfloat16 on the CPU), its optimizer, and the
training log (``metrics.json``) with its plot."""

from .metrics_json import drop_partial_last_line, read_metrics_json
from .optimizer import build_optimizer
from .trainer import NucleiTrainer, create_ddp_model_any_device
from .training_curves import TrainingCurvesHook, plot_training_curves

__all__ = [
    "drop_partial_last_line",
    "read_metrics_json",
    "create_ddp_model_any_device",
    "TrainingCurvesHook",
    "plot_training_curves",
    "build_optimizer",
    "NucleiTrainer",
]
