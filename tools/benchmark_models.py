#!/usr/bin/env python
"""
Inference latency and parameters of whole models, side by side in one process:

    python tools/benchmark_models.py --size 512 --runs 10 \\
        configs/DSB2018/cpu/mask_rcnn_R_18_FPN.yaml=output/dsb2018_cpu/mask_rcnn_R_18_FPN/model_final.pth \\
        configs/DSB2018/cpu/mask_rcnn_R_18_NestedFPN.yaml=output/dsb2018_cpu/mask_rcnn_R_18_NestedFPN/model_final.pth

Each CONFIG[=WEIGHTS] is built on --device, loaded (random weights without =WEIGHTS) and run on
the same input: the first image of the config's first test dataset, resized to SIZE x SIZE
(so trained models keep their real numbers of proposals and detections). Runs are interleaved
(every round runs every model once, in an order rotated each round) after warm-up rounds, so
machine-load drifts hit every model alike. Prints a Markdown table: parameters, median and
minimum latency, and each model's median of per-round ratios to the first model.
"""
import argparse
import statistics
import time

import cv2
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

import maskrcnnpp  # noqa: F401
from maskrcnnpp.data.image_io import read_image_rgb
from maskrcnnpp.engine import setup_cfg


def _load(spec, device):
    config_file, _, weights = spec.partition("=")
    cfg = setup_cfg(config_file, ["MODEL.DEVICE", device])
    model = build_model(cfg).eval()
    if weights:
        DetectionCheckpointer(model).load(weights)
    return cfg, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="CONFIG[=WEIGHTS]; the first is the reference")
    parser.add_argument("--size", type=int, default=512, help="input height = width")
    parser.add_argument("--runs", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = [_load(spec, args.device) for spec in args.models]
    cfg0 = loaded[0][0]
    record = DatasetCatalog.get(cfg0.DATASETS.TEST[0])[0]
    rgb = cv2.resize(read_image_rgb(record["file_name"]), (args.size, args.size))
    image = rgb[:, :, ::-1] if cfg0.INPUT.FORMAT == "BGR" else rgb
    tensor = torch.as_tensor(image.transpose(2, 0, 1).copy()).float()
    inputs = [{"image": tensor, "height": args.size, "width": args.size}]

    def run(model):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(inputs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, len(out[0]["instances"]) if "instances" in out[0] else 0

    times = [[] for _ in loaded]
    detections = [0] * len(loaded)
    for r in range(args.warmup + args.runs):
        order = [(r + k) % len(loaded) for k in range(len(loaded))]
        for k in order:
            seconds, detections[k] = run(loaded[k][1])
            if r >= args.warmup:
                times[k].append(seconds)
    print(f"\n{args.size}x{args.size}, {args.device}, {args.threads} threads, {args.runs} interleaved rounds "
          f"after {args.warmup} warm-up; input: {record['file_name']}\n")
    print("| model | params (M) | detections | median ms | min ms | median ratio to first |")
    print("|---|--:|--:|--:|--:|--:|")
    for k, spec in enumerate(args.models):
        params = sum(p.numel() for p in loaded[k][1].parameters()) / 1e6
        ratios = [a / b for a, b in zip(times[k], times[0])]
        print(f"| {spec.partition('=')[0]} | {params:.2f} | {detections[k]} | "
              f"{1000 * statistics.median(times[k]):.0f} | {1000 * min(times[k]):.0f} | "
              f"{statistics.median(ratios):.2f}x |")


if __name__ == "__main__":
    main()
