"""Training-side pieces shared by tools/: config set-up, evaluators, DDP on any device, plots."""
from .checkpointer import AtomicDetectionCheckpointer, load_model_weights
from .config_checks import check_datasets_registered, check_registered_names
from .evaluators import build_nuclei_evaluators, format_results_table
from .metrics_json import drop_partial_last_line, read_metrics_json
from .optimizer import build_optimizer
from .setup import resolve_device, setup_cfg
from .trainer import NucleiTrainer, create_ddp_model_any_device
from .training_curves import TrainingCurvesHook, plot_training_curves

__all__ = [
    "AtomicDetectionCheckpointer",
    "setup_cfg",
    "resolve_device",
    "check_datasets_registered",
    "check_registered_names",
    "drop_partial_last_line",
    "read_metrics_json",
    "build_nuclei_evaluators",
    "create_ddp_model_any_device",
    "TrainingCurvesHook",
    "plot_training_curves",
    "format_results_table",
    "load_model_weights",
    "build_optimizer",
    "NucleiTrainer",
]
