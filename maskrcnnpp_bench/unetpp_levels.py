"""
A trained semantic UNet++ scored pruned at every level and as the ensemble, from one pass of
the whole network per image (``tools/evaluate_unetpp_levels.py``).

Pruned at level k (``MODEL.UNETPP.TEST_LEVEL k``), the model outputs head k of the sub-network
that feeds X(0,k), which equals head k of the whole network (tests/modeling/test_semantic_unetpp.py); so
the whole network runs once per image (once per view with ``MODEL.UNETPP.TEST_DIHEDRAL_MEAN``)
and every head is scored with the project's evaluators
(Detectron2's SemSegEvaluator + the nuclei metrics) on DATASETS.TEST[0]. Then each level's
latency is timed with the model really pruned (TEST_LEVEL k), the levels interleaved round by
round (order rotated) on the dataset's first image: the median of ``runs`` rounds, and the
median of the per-round ratios to the whole network. The parameters of a level are those of
the modules its pruned forward calls.
"""

import json
import logging
import os
import statistics
from typing import Dict

import torch
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from tabulate import tabulate

from maskrcnnpp.checkpoint.checkpointer import load_model_weights
from maskrcnnpp.data.build import build_nuclei_mapper
from maskrcnnpp.evaluation.evaluators import build_nuclei_evaluators
from maskrcnnpp.utils.atomic_io import atomic_open

from .flops import count_active_parameters
from .timing import median_paired_ratio, time_interleaved

logger = logging.getLogger(__name__)


def evaluate_unetpp_levels(cfg, *, runs: int = 10) -> Dict:
    """
    Score every pruned level and the ensemble of the model of ``cfg`` (``MODEL.WEIGHTS``, a
    semantic UNet++ with deep supervision), time each level, and write
    ``OUTPUT_DIR/levels.json`` atomically.

    Args:
        cfg: a frozen config of a ``SemanticUNetPlusPlus`` with heads on every column.
        runs (int): timing rounds (median reported).

    Returns:
        dict: ``{"weights", "dataset", "num_images", "timing_image_size", "timing_device",
        "threads", "runs", "levels"}``, ``levels`` one record per level (0: the ensemble) with
        ``params``, ``latency_ms``, ``latency_ratio`` (to the whole network) and the
        evaluators' ``sem_seg`` and ``nuclei`` results.

    Raises:
        ValueError: the weights are missing or do not match; the model has no head on some
            column (no deep supervision), so it cannot be pruned.
    """
    model = build_model(cfg).eval()
    load_model_weights(model, cfg.MODEL.WEIGHTS)
    depth = len(model.in_features) - 1
    if model.head_columns != list(range(1, depth + 1)):
        raise ValueError(
            f"heads on columns {model.head_columns}; pruning needs deep supervision "
            f"(MODEL.UNETPP.DEEP_SUPERVISION True with SKIP unet+ or unet++)."
        )
    dataset = cfg.DATASETS.TEST[0]
    levels = list(range(1, depth + 1)) + [0]  # 0: the ensemble
    out_root = os.path.join(cfg.OUTPUT_DIR, "levels")
    evaluators = {
        k: build_nuclei_evaluators(cfg, dataset, os.path.join(out_root, f"L{k}")) for k in levels
    }
    for e in evaluators.values():
        e.reset()
    loader = build_detection_test_loader(
        cfg, dataset, mapper=build_nuclei_mapper(cfg, is_train=False)
    )
    first_image = None
    with torch.no_grad():
        for n, inputs in enumerate(loader):
            image = model.normalize_image(inputs[0]["image"])
            first_image = image if first_image is None else first_image
            if (
                model.test_dihedral_mean
            ):  # MODEL.UNETPP.TEST_DIHEDRAL_MEAN: every head over the 8 views
                probs = model.dihedral_mean(model.head_probabilities, image)
            else:
                probs = model.head_probabilities(image)  # (depth, C, H, W)
            height, width = image.shape[-2:]
            for k in levels:
                p = probs.mean(0) if k == 0 else probs[k - 1]
                out = model.postprocess(
                    p, inputs[0].get("height", height), inputs[0].get("width", width)
                )
                evaluators[k].process(inputs, [out])
            if (n + 1) % 20 == 0:
                logger.info(f"{n + 1} / {len(loader)} images")
    results = {k: evaluators[k].evaluate() for k in levels}

    def run_level(k):
        model.test_level = k
        return model.predict_probabilities(first_image)

    with torch.no_grad():
        seconds = time_interleaved(
            {k: (lambda k=k: run_level(k)) for k in levels},
            rounds=runs,
            warmup=1,
            device=str(first_image.device),
        )
        params = {k: count_active_parameters(model, lambda k=k: run_level(k)) for k in levels}

    records = [
        {
            "level": k,
            "params": params[k],
            "latency_ms": statistics.median(seconds[k]) * 1000,
            "latency_ratio": median_paired_ratio(seconds[k], seconds[depth]),
            "sem_seg": results[k]["sem_seg"],
            "nuclei": results[k]["nuclei"],
        }
        for k in levels
    ]
    report = {
        "weights": cfg.MODEL.WEIGHTS,
        "dataset": dataset,
        "num_images": len(loader),
        "timing_image_size": "x".join(str(s) for s in first_image.shape[-2:]),
        "timing_device": str(first_image.device),
        "threads": torch.get_num_threads(),
        "runs": runs,
        "levels": records,
    }
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with atomic_open(os.path.join(cfg.OUTPUT_DIR, "levels.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def format_levels_table(report: Dict) -> str:
    """The Markdown table of :func:`evaluate_unetpp_levels`'s report, under one line that says
    what was measured."""
    depth = max(r["level"] for r in report["levels"])
    rows = []
    for r in report["levels"]:
        nuclei = r["nuclei"]
        rows.append([
            f"L{r['level']}" if r["level"] else "ensemble", f"{r['params'] / 1e6:.2f}M",
            f"{nuclei['iou']:.4f}", f"{nuclei['dice']:.4f}", f"{nuclei['dsb_score']:.4f}",
            f"{nuclei['aji']:.4f}", f"{nuclei['pq']:.4f}", f"{r['latency_ms']:.1f}",
            f"{r['latency_ratio']:.2f}x",
        ])  # fmt: skip
    title = (
        f"{report['dataset']}, {report['num_images']} images; latency: median of {report['runs']} "
        f"interleaved runs on one {report['timing_image_size']} image, {report['timing_device']}, "
        f"{report['threads']} threads; ratio: median of per-round ratios"
    )
    table = tabulate(
        rows,
        headers=[
            "level",
            "params",
            "iou",
            "dice",
            "dsb_score",
            "aji",
            "pq",
            "latency ms",
            f"vs L{depth}",
        ],
        tablefmt="pipe",
    )
    return f"{title}\n{table}"
