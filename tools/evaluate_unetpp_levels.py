#!/usr/bin/env python
"""
Score a trained semantic UNet++ pruned at every level and as the ensemble, from one pass:

    python tools/evaluate_unetpp_levels.py --config-file configs/DSB2018/unetpp_vgg.yaml \
        MODEL.WEIGHTS output/dsb2018_unetpp/unetpp_vgg/model_final.pth

Every head is scored on DATASETS.TEST[0] from one pass of the whole network, then each level
is timed really pruned (maskrcnnpp_bench/unetpp_levels.py). Prints one table (level,
parameters of the sub-network, IoU, Dice, DSB score, AJI, PQ, latency and its ratio to the
whole network) and writes OUTPUT_DIR/levels.json.
"""

import os
import sys

# the project's own measurements (maskrcnnpp_bench/) sit beside the installed package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from detectron2.utils.logger import setup_logger

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models and datasets
from maskrcnnpp.config import setup_cfg
from maskrcnnpp.utils.cpu_memory import keep_freed_memory
from maskrcnnpp_bench.unetpp_levels import evaluate_unetpp_levels, format_levels_table


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--runs", type=int, default=10, help="timing rounds (median reported)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args()


def main():
    args = parse_args()
    keep_freed_memory()  # large CPU tensors without fresh page faults (maskrcnnpp/utils/cpu_memory.py)
    cfg = setup_cfg(args.config_file, args.opts)
    setup_logger(name="maskrcnnpp")
    try:
        report = evaluate_unetpp_levels(cfg, runs=args.runs)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"evaluate_unetpp_levels: {args.config_file}: {e}")
    print("\n" + format_levels_table(report))


if __name__ == "__main__":
    main()
