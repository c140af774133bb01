"""Plot of the training losses (and evaluation metrics) read from Detectron2's metrics.json."""

import logging
import os

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.atomic_io import atomic_open
from .metrics_json import read_metrics_json

logger = logging.getLogger(__name__)

# metrics.json scalars plotted on the metrics panel, when present (evaluation results).
_METRIC_KEYS = ("segm/AP", "segm/AP50", "bbox/AP", "nuclei/iou", "nuclei/dice", "nuclei/dsb_score")


def plot_training_curves(metrics_json, out_png):
    """
    Draw the loss curves (left) and the evaluation metrics (right, if any) of a run.

    Args:
        metrics_json (str): Detectron2's ``OUTPUT_DIR/metrics.json``.
        out_png (str): written atomically (never half-written).

    Returns:
        out_png, or None when the file holds no loss record yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics_json(metrics_json)
    loss_records = [r for r in records if "total_loss" in r and "iteration" in r]
    if not loss_records:
        return None
    loss_keys = sorted({k for r in loss_records for k in r if k.startswith("loss_")})
    metric_records = [r for r in records if any(k in r for k in _METRIC_KEYS)]

    fig, axes = plt.subplots(
        1, 2 if metric_records else 1, figsize=(12 if metric_records else 6, 4)
    )
    axes = axes if metric_records else [axes]
    its = [r["iteration"] for r in loss_records]
    axes[0].plot(its, [r["total_loss"] for r in loss_records], label="total_loss", lw=2, color="k")
    for k in loss_keys:
        axes[0].plot(its, [r.get(k, float("nan")) for r in loss_records], label=k, lw=1)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("loss (median over the logging period)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title("training losses")
    if metric_records:
        for k in _METRIC_KEYS:
            pts = [(r["iteration"], r[k]) for r in metric_records if k in r]
            if not pts:
                continue
            scale = 1.0 if k.startswith("nuclei/") else 0.01  # COCO AP is in percent
            axes[1].plot([p[0] for p in pts], [p[1] * scale for p in pts], "o-", label=k)
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("fraction")
        axes[1].set_ylim(0, 1)
        axes[1].legend(fontsize=7)
        axes[1].set_title("evaluation")
    fig.tight_layout()
    try:
        with atomic_open(out_png, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return out_png


class TrainingCurvesHook(HookBase):
    """Re-draws ``OUTPUT_DIR/training_curves.png`` every ``period`` iterations and at the end."""

    def __init__(self, output_dir, period):
        self._metrics_json = os.path.join(output_dir, "metrics.json")
        self._out_png = os.path.join(output_dir, "training_curves.png")
        self._period = period

    def _draw(self):
        if comm.is_main_process() and os.path.exists(self._metrics_json):
            if plot_training_curves(self._metrics_json, self._out_png):
                logger.info("Training curves written to %s", self._out_png)

    def after_step(self):
        if self._period > 0 and (self.trainer.iter + 1) % self._period == 0:
            self._draw()

    def after_train(self):
        self._draw()
