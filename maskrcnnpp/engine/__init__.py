"""Training-side pieces shared by tools/: config set-up, evaluators, DDP on any device, plots."""
from .checkpointer import AtomicDetectionCheckpointer
from .config_checks import check_datasets_registered, check_registered_names
from .ddp import create_ddp_model_any_device
from .evaluators import build_nuclei_evaluators
from .metrics_json import drop_partial_last_line, read_metrics_json
from .optimizer import build_optimizer
from .results_table import format_results_table
from .setup import resolve_device, setup_cfg
from .trainer import NucleiTrainer
from .training_curves import TrainingCurvesHook, plot_training_curves
from .weights import load_model_weights

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
