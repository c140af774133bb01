#!/usr/bin/env python
"""
Cost of maskrcnnpp's models against their baselines, and throughput of its data and
evaluation code. For each model x variant x input x device: parameters, FLOPs (fvcore's
counter, one per multiply-add), inference latency (median and quartiles over timed rounds
after warm-up; the compared models interleaved in one process, ratios taken within each
round), one training step's time, and peak memory (CUDA: max_memory_allocated; CPU: the
resident-set high-water mark above the resident set before the call). Prints Markdown
tables and writes OUTPUT/benchmark.json (one record per model x variant x input x device),
OUTPUT/benchmark.md and OUTPUT/benchmark.png.

Suites (--suites):
  rcnn_backbone   Mask R-CNN's FPN vs the nested FPN designs (Mask R-CNN++), bottom-up + neck
  rcnn_model      the whole detectors, proposals and detections pinned to equal counts
  rcnn_quick_training
                  the README main job's configs (configs/quick/mask_rcnn_{FPN,NestedFPN}.yaml)
                  on one training batch: training-step time and peak memory
  unetpp_vs_smp   our semantic UNet++ vs segmentation_models_pytorch's UnetPlusPlus
  unetpp_levels   our UNet++ pruned at TEST_LEVEL 1..4 and the ensemble
  unetpp_predict  tools/predict.py's time per image (1024x1024) against one network pass
                  (512x512), in float32 and bfloat16 (TEST.PRECISION), and bfloat16's error
  time_to_quality training minutes until a run's evaluation reached --quality-target, for
                  the run folders of --training-runs (only with that option)
  training_precision
                  one CPU training step in float32 and in bfloat16 (SOLVER.AMP.ENABLED on the
                  CPU) for each of --training-configs
  throughput      datasets/prepare_dsb2018.py on the DSB2018 copy of --dsb-root; nuclei metrics

    python tools/benchmark.py --quick                  # the regression check, < 1 min
    python tools/benchmark.py --threads 2              # the full run (CPU, and CUDA if present)
    python tools/benchmark.py --suites rcnn_model --rcnn-config configs/DSB2018/cpu/mask_rcnn_R_18_FPN.yaml \\
        --rcnn-designs unet++/sum/separable --rcnn-sizes 512 \\
        --rcnn-weights FPN=output/dsb2018_cpu/mask_rcnn_R_18_FPN/model_final.pth \\
        unet++/sum/separable=output/dsb2018_cpu/mask_rcnn_R_18_NestedFPN/model_final.pth
"""

import os
import sys

# the project's own measurements (maskrcnnpp_bench/) sit beside the installed package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse

import torch

from maskrcnnpp_bench.suites import FULL, QUICK, SUITES, run_benchmark

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small models and inputs, few runs")
    parser.add_argument(
        "--suites",
        nargs="+",
        choices=SUITES,
        help="default: all (quick: all but rcnn_quick_training)",
    )
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda when torch sees a GPU")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--runs", type=int, help="timed inference rounds (full 10, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (full 2, quick 1)")
    parser.add_argument("--train-runs", type=int, help="timed training steps, 0: none (3 / 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--no-flops", action="store_true", help="skip fvcore's FLOP count")
    parser.add_argument(
        "--profile-modules",
        action="store_true",
        help="rcnn_backbone / rcnn_model: also time each component (bottom-up, laterals, nested "
        "nodes, output convs, RPN, ROI heads, ...) of every model, --runs rounds each",
    )
    parser.add_argument(
        "--fold-norms",
        action="store_true",
        help="fold FrozenBN/BN into the convs of the Mask R-CNN models (inference only: their "
        "training steps are skipped)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last weights and inputs, all models"
    )
    parser.add_argument(
        "--rcnn-config",
        default=os.path.join(REPO_ROOT, "configs", "Base-RCNN-FPN-Nuclei.yaml"),
        help="detector YAML both Mask R-CNN and Mask R-CNN++ start from",
    )
    parser.add_argument("--rcnn-sizes", type=int, nargs="+", help="square inputs (512 1024 / 128)")
    parser.add_argument(
        "--rcnn-depth", type=int, help="MODEL.RESNETS.DEPTH (50 / 18; 0: keep the config's)"
    )
    parser.add_argument(
        "--rcnn-designs", nargs="+", metavar="SKIP/FUSION/NODE_CONV", help="nested FPN designs"
    )
    parser.add_argument("--proposals", type=int, help="pinned proposals per image (1000 / 50)")
    parser.add_argument("--detections", type=int, help="pinned detections per image (100 / 5)")
    parser.add_argument(
        "--rcnn-opts",
        nargs="+",
        metavar="KEY VALUE",
        help="config overrides for every detector (quick: MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64)",
    )
    parser.add_argument(
        "--rcnn-weights",
        nargs="+",
        default=[],
        metavar="VARIANT=PATH",
        help="trained checkpoints for rcnn_model, e.g. FPN=a.pth unet++/sum/separable=b.pth",
    )
    parser.add_argument("--unetpp-sizes", type=int, nargs="+", help="square inputs (256 512 / 64)")
    parser.add_argument("--unetpp-batch", type=int, help="images per batch (4 / 2)")
    parser.add_argument(
        "--training-configs",
        nargs="+",
        metavar="CONFIG",
        help="training_precision: configs to step (full: quick + DSB2018 CPU; quick: quick UNet++)",
    )
    parser.add_argument(
        "--training-runs",
        nargs="+",
        default=[],
        metavar="DIR",
        help="time_to_quality: training run folders or tools/compare.py output roots",
    )
    parser.add_argument(
        "--quality-target",
        default="nuclei/dsb_score=0.45",
        metavar="TASK/KEY=VALUE",
        help="time_to_quality: the metric and value to reach (default nuclei/dsb_score=0.45)",
    )
    parser.add_argument(
        "--predict-sizes",
        type=int,
        nargs=2,
        metavar=("PASS", "IMAGE"),
        help="unetpp_predict: side of the single network pass and of the predicted image (512 1024 / 64 128)",
    )
    parser.add_argument(
        "--dsb-root",
        help="DSB2018 copy in the Kaggle layout for the throughput suite (skipped without one)",
    )
    parser.add_argument("--prepare-images", type=int, help="images to convert (all / 6)")
    parser.add_argument("--prepare-workers", type=int, default=2, help="prepare_dsb2018 workers")
    parser.add_argument("--metrics-images", type=int, help="images the metrics score (200 / 20)")
    parser.add_argument("--output", help="folder for benchmark.{json,md,png}")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, os.path.join(REPO_ROOT, value) if key == "output" else value)
    if args.devices is None:
        args.devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--devices {device}: torch sees no CUDA device here")
    weights = {}
    for spec in args.rcnn_weights:
        variant, sep, path = spec.partition("=")
        if not sep or not path:
            parser.error(f"--rcnn-weights {spec!r}: expected VARIANT=PATH")
        if not os.path.isfile(path):
            parser.error(f"--rcnn-weights {spec!r}: no file {path}")
        weights[variant] = path
    args.rcnn_weights = weights
    metric, _, target = args.quality_target.rpartition("=")
    try:
        float(target)
    except ValueError:
        metric = ""
    if "/" not in metric:
        parser.error(
            f"--quality-target {args.quality_target!r}: expected TASK/KEY=VALUE, e.g. nuclei/dsb_score=0.45"
        )
    return args


if __name__ == "__main__":
    sys.exit(run_benchmark(parse_args(), REPO_ROOT))
