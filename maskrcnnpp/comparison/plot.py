"""``comparison.png``: per-model DSB score and fg IoU (a point per seed, mean ± sd bars) and, per
pair, the per-image paired differences with their mean and bootstrap 95 % CI."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..utils.atomic_io import atomic_open  # noqa: E402

__all__ = ["plot_comparison"]

_PANELS = (
    ("nuclei/dsb_score", "dsb_score", "DSB score"),
    ("nuclei/iou", "iou", "fg IoU (per-image mean)"),
)


def _model_panel(ax, models, metric, title):
    labels = []
    for x, row in enumerate(models.values()):
        labels.append(row["label"])
        values = np.array(
            [v for v in row["per_seed"].get(metric, {}).values() if v is not None], dtype=float
        )
        if values.size:
            jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
            ax.plot(
                x + jitter,
                values,
                "o",
                color="tab:blue",
                alpha=0.55,
                markersize=5,
                label="one seed" if x == 0 else None,
            )
        mean, sd = row["mean"].get(metric), row["sd"].get(metric)
        if mean is not None:
            ax.errorbar(
                x + 0.3,
                mean,
                yerr=sd or 0.0,
                fmt="s",
                color="black",
                capsize=4,
                markersize=5,
                label="mean ± sd (ddof=1)" if x == 0 else None,
            )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _pair_panel(ax, block, key, title, rng):
    labels = []
    for y, pair in enumerate(block["pairs"]):
        stats = pair["metrics"][key]
        diff = np.asarray(stats["differences"], dtype=float)
        ax.plot(
            diff,
            y + rng.uniform(-0.18, 0.18, diff.size),
            ".",
            color="tab:gray",
            alpha=0.5,
            markersize=4,
            label="one image" if y == 0 else None,
        )
        ax.errorbar(
            stats["mean"],
            y + 0.32,
            xerr=[[stats["mean"] - stats["ci_low"]], [stats["ci_high"] - stats["mean"]]],
            fmt="D",
            color="tab:red",
            capsize=4,
            markersize=5,
            label="mean, bootstrap 95% CI" if y == 0 else None,
        )
        labels.append(
            f"{block['models'][pair['b']]['label']}\n− {block['models'][pair['a']]['label']}"
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_title(f"{title}: B − A per image (seed-averaged)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_comparison(block, path, title=""):
    """
    Args:
        block (dict): one entry of ``comparison["datasets"]`` from
            :func:`maskrcnnpp.comparison.tables.summarize_comparison`.
        path (str): the PNG to write (atomically).
        title (str): the figure's title.
    """
    models, pairs = block["models"], block["pairs"]
    rows = 2 if pairs else 1
    width = max(12.0, 2.6 * len(models))
    fig, axes = plt.subplots(rows, 2, figsize=(width, 4.2 * rows + 0.4 * len(pairs)), squeeze=False)
    for column, (metric, _, panel_title) in enumerate(_PANELS):
        _model_panel(axes[0][column], models, metric, panel_title)
    if pairs:
        rng = np.random.default_rng(0)  # vertical jitter only
        for column, (_, key, panel_title) in enumerate(_PANELS):
            _pair_panel(axes[1][column], block, key, panel_title.split(" (")[0], rng)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
