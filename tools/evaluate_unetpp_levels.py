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
levels interleaved round by round on the dataset's first image (median of --runs).

Prints one table (level, parameters of the sub-network, IoU, Dice, DSB score, AJI, PQ,
latency and its ratio to the whole network) and writes OUTPUT_DIR/levels.json atomically.
"""

import argparse
import json
import logging
import os
import statistics
import time

import torch
from tabulate import tabulate

from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.utils.logger import setup_logger

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models and datasets
from maskrcnnpp.data.build import build_nuclei_mapper
from maskrcnnpp.engine import build_nuclei_evaluators, load_model_weights, setup_cfg
from maskrcnnpp.utils.atomic_io import atomic_open


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--runs", type=int, default=10, help="timing rounds (median reported)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args()


def sub_network_parameters(model, level):
    """Parameters that the sub-network pruned at ``level`` uses: encoder levels 0..level,
    decoder nodes with i + j <= level, heads on columns <= level."""
    keep_encoder = set(model.in_features[: level + 1])
    total = 0
    for name, p in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "decoder":
            i, j = map(int, parts[1].split("_")[1:])
            total += p.numel() if i + j <= level else 0
        elif parts[0] == "heads":
            total += p.numel() if int(parts[1].split("_")[2]) <= level else 0
        elif parts[0] == "encoder":
            # VGG: encoder.vgg{k}.*; ResNetEncoder: encoder.resnet.{stem,res2..res5}.*
            stage = parts[2] if parts[1] == "resnet" else parts[1]
            total += p.numel() if stage == "stem" or stage in keep_encoder else 0
    return total


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
            image = model._normalize(inputs[0]["image"])
            first_image = image if first_image is None else first_image
            probs = model.head_probabilities(image)  # (depth, C, H, W)
            height, width = image.shape[-2:]
            for k in levels:
                p = probs.mean(0) if k == 0 else probs[k - 1]
                out = sem_seg_postprocess(p, (height, width), inputs[0].get("height", height),
                                          inputs[0].get("width", width))
                evaluators[k].process(inputs, [{"sem_seg": out}])
            if (n + 1) % 20 == 0:
                logger.info(f"{n + 1} / {len(loader)} images")
    results = {k: evaluators[k].evaluate() for k in levels}

    timings = {k: [] for k in levels}
    with torch.no_grad():
        for k in levels:  # warm-up
            model.test_level = k
            model.predict_probabilities(first_image)
        for _ in range(args.runs):
            for k in levels:
                model.test_level = k
                if first_image.is_cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model.predict_probabilities(first_image)
                if first_image.is_cuda:
                    torch.cuda.synchronize()
                timings[k].append(time.perf_counter() - start)
    full_ms = statistics.median(timings[depth]) * 1000

    rows, records = [], []
    for k in levels:
        nuclei = results[k]["nuclei"]
        ms = statistics.median(timings[k]) * 1000
        params = sub_network_parameters(model, depth if k == 0 else k)
        record = {"level": k, "params": params, "latency_ms": ms, "latency_ratio": ms / full_ms,
                  "sem_seg": results[k]["sem_seg"], "nuclei": nuclei}
        records.append(record)
        rows.append([f"L{k}" if k else "ensemble", f"{params / 1e6:.2f}M", f"{nuclei['iou']:.4f}",
                     f"{nuclei['dice']:.4f}", f"{nuclei['dsb_score']:.4f}", f"{nuclei['aji']:.4f}",
                     f"{nuclei['pq']:.4f}", f"{ms:.1f}", f"{ms / full_ms:.2f}x"])
    size = "x".join(str(s) for s in first_image.shape[-2:])
    print(f"\n{dataset}, {len(loader)} images; latency: median of {args.runs} interleaved runs on one "
          f"{size} image, {first_image.device}, {torch.get_num_threads()} threads")
    print(tabulate(rows, headers=["level", "params", "iou", "dice", "dsb_score", "aji", "pq",
                                  "latency ms", "vs L" + str(depth)], tablefmt="pipe"))
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with atomic_open(os.path.join(cfg.OUTPUT_DIR, "levels.json"), "w") as f:
        json.dump({"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS, "dataset": dataset,
                   "timing_image_size": size, "levels": records}, f, indent=2)


if __name__ == "__main__":
    main()
