#!/usr/bin/env python
"""
Score a trained semantic UNet++ pruned at every level and as the ensemble, from one pass:

    python tools/evaluate_unetpp_levels.py --config-file configs/DSB2018/unetpp_vgg.yaml \
        MODEL.WEIGHTS output/dsb2018_unetpp/unetpp_vgg/model_final.pth

Pruned at level k (``MODEL.UNETPP.TEST_LEVEL k``), the model outputs head k of the sub-network
that feeds X(0,k), which equals head k of the whole network (tests/test_semantic_unetpp.py);
so the whole network runs once per image and every head is scored with the project's
evaluators (Detectron2's SemSegEvaluator + the nuclei metrics) on DATASETS.TEST[0]. Then
each level's CPU/CUDA latency is timed with the model really pruned (TEST_LEVEL k), the
levels interleaved round by round (order rotated) on the dataset's first image: the median
of --runs, and the median of the per-round ratios to the whole network. The parameters of a
level are those of the modules its pruned forward calls.

Prints one table (level, parameters of the sub-network, IoU, Dice, DSB score, AJI, PQ,
latency and its ratio to the whole network) and writes OUTPUT_DIR/levels.json atomically.
"""

import argparse
import json
import logging
import os
import statistics

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

import torch
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models and datasets
from maskrcnnpp.benchmark.flops import count_active_parameters
from maskrcnnpp.benchmark.timing import median_paired_ratio, time_interleaved
from maskrcnnpp.data.build import build_nuclei_mapper
from maskrcnnpp.engine import build_nuclei_evaluators, load_model_weights, setup_cfg
from maskrcnnpp.utils.atomic_io import atomic_open


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--runs", type=int, default=10, help="timing rounds (median reported)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = setup_cfg(args.config_file, args.opts)
    setup_logger(name="maskrcnnpp")
    logger = logging.getLogger("maskrcnnpp")
    model = build_model(cfg).eval()
    try:
        load_model_weights(model, cfg.MODEL.WEIGHTS, allow_random=False)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"evaluate_unetpp_levels: {e}")
    depth = len(model.in_features) - 1
    if model.head_columns != list(range(1, depth + 1)):
        raise SystemExit(
            f"{args.config_file}: heads on columns {model.head_columns}; pruning needs deep "
            f"supervision (MODEL.UNETPP.DEEP_SUPERVISION True with SKIP unet+ or unet++)."
        )
    dataset = cfg.DATASETS.TEST[0]
    levels = list(range(1, depth + 1)) + [0]  # 0: the ensemble
    out_root = os.path.join(cfg.OUTPUT_DIR, "levels")
    evaluators = {
        k: build_nuclei_evaluators(cfg, dataset, os.path.join(out_root, f"L{k}")) for k in levels
    }
    for e in evaluators.values():
        e.reset()
    loader = build_detection_test_loader(cfg, dataset, mapper=build_nuclei_mapper(cfg, is_train=False))
    first_image = None
    with torch.no_grad():
        for n, inputs in enumerate(loader):
            image = model.normalize_image(inputs[0]["image"])
            first_image = image if first_image is None else first_image
            probs = model.head_probabilities(image)  # (depth, C, H, W)
            height, width = image.shape[-2:]
            for k in levels:
                p = probs.mean(0) if k == 0 else probs[k - 1]
                out = model.postprocess(p, inputs[0].get("height", height), inputs[0].get("width", width))
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
            rounds=args.runs,
            warmup=1,
            device=str(first_image.device),
        )
        params = {
            k: count_active_parameters(model, lambda k=k: run_level(k)) for k in levels
        }

    rows, records = [], []
    for k in levels:
        nuclei = results[k]["nuclei"]
        ms = statistics.median(seconds[k]) * 1000
        ratio = median_paired_ratio(seconds[k], seconds[depth])
        record = {"level": k, "params": params[k], "latency_ms": ms, "latency_ratio": ratio,
                  "sem_seg": results[k]["sem_seg"], "nuclei": nuclei}
        records.append(record)
        rows.append([f"L{k}" if k else "ensemble", f"{params[k] / 1e6:.2f}M", f"{nuclei['iou']:.4f}",
                     f"{nuclei['dice']:.4f}", f"{nuclei['dsb_score']:.4f}", f"{nuclei['aji']:.4f}",
                     f"{nuclei['pq']:.4f}", f"{ms:.1f}", f"{ratio:.2f}x"])
    size = "x".join(str(s) for s in first_image.shape[-2:])
    print(f"\n{dataset}, {len(loader)} images; latency: median of {args.runs} interleaved runs on one "
          f"{size} image, {first_image.device}, {torch.get_num_threads()} threads; ratio: median of "
          f"per-round ratios")
    print(tabulate(rows, headers=["level", "params", "iou", "dice", "dsb_score", "aji", "pq",
                                  "latency ms", "vs L" + str(depth)], tablefmt="pipe"))
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with atomic_open(os.path.join(cfg.OUTPUT_DIR, "levels.json"), "w") as f:
        json.dump({"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS, "dataset": dataset,
                   "timing_image_size": size, "levels": records}, f, indent=2)


if __name__ == "__main__":
    main()
