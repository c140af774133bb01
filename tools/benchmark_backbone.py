#!/usr/bin/env python
"""
Cost of the nested FPN's designs against Detectron2's FPN: parameters, multiply-adds and
latency of the backbone (bottom-up + neck), random weights, inference mode.

Every skip design x fusion x node conv is built next to FPN in one process. The timed runs
interleave the designs (each round runs every design once, in an order rotated each round) and
pair every run of a nested design with an FPN run right before or after it, so that machine
load drifts hit every design alike. Latency is wall-clock time: median and minimum over the
timed runs, and the median over pairs of design / FPN (the steadiest figure when other
processes share the cores). Prints a Markdown table with ratios to FPN.
Example (the command behind the numbers in the nested FPN's report):

    python tools/benchmark_backbone.py --size 512 --threads 2 --runs 10

Measured so (2-core CPU VM, no other job running, 2026-11-26; median of paired ratios to FPN,
whose backbone took 310 ms): paper-faithful unet++/concat/plain 2.97x (3.86x the MACs),
unet++/sum/plain 1.68x, unet++/concat/separable 1.84x, unet++/sum/separable 1.21x,
unet+/sum/separable 1.19x, fpn/sum/separable 1.05x.
"""

import argparse
import itertools
import statistics
import time

import torch
from fvcore.nn import FlopCountAnalysis

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from maskrcnnpp import add_maskrcnnpp_config
from maskrcnnpp.modeling.backbone.nested_graph import SKIP_DESIGNS
from maskrcnnpp.modeling.backbone.nested_node import NODE_CONVS
from maskrcnnpp.modeling.backbone.nested_fpn import FUSIONS


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="input height = width (pixels)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per design")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per design first")
    parser.add_argument("--depth", type=int, default=50, help="MODEL.RESNETS.DEPTH")
    parser.add_argument("--out-channels", type=int, default=256, help="MODEL.FPN.OUT_CHANNELS")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--designs",
        nargs="+",
        metavar="SKIP/FUSION/NODE_CONV",
        help="nested designs to time beside FPN, e.g. unet++/sum/separable (default: all)",
    )
    return parser.parse_args()


def backbone_cfg(args, backbone_name, skip="unet++", fusion="concat", node_conv="plain"):
    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    cfg.MODEL.BACKBONE.NAME = backbone_name
    cfg.MODEL.RESNETS.DEPTH = args.depth
    if args.depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = args.out_channels
    cfg.MODEL.NESTED_FPN.SKIP = skip
    cfg.MODEL.NESTED_FPN.FUSION = fusion
    cfg.MODEL.NESTED_FPN.NODE_CONV = node_conv
    return cfg


def build_designs(args):
    """
    Returns:
        dict[str -> Backbone]: "FPN", then "nested <skip>/<fusion>/<node conv>" for every
        combination (those in ``args.designs`` if given), in eval mode on ``args.device``.
    """
    all_designs = ["/".join(d) for d in itertools.product(SKIP_DESIGNS, FUSIONS, NODE_CONVS)]
    unknown = sorted(set(args.designs or []) - set(all_designs))
    if unknown:
        raise ValueError(f"--designs: {unknown} unknown; choose among {all_designs}.")
    torch.manual_seed(0)
    designs = {"FPN": build_backbone(backbone_cfg(args, "build_resnet_fpn_backbone"))}
    for design in all_designs:
        if args.designs and design not in args.designs:
            continue
        cfg = backbone_cfg(args, "build_resnet_nested_fpn_backbone", *design.split("/"))
        designs[f"nested {design}"] = build_backbone(cfg)
    return {name: model.to(args.device).eval() for name, model in designs.items()}


def count_params(module):
    return sum(p.numel() for p in module.parameters())


def count_gmacs(model, image):
    """
    Returns:
        (float, float): multiply-adds of the whole backbone and of its bottom-up, in G
        (fvcore counts one "flop" per multiply-add of a conv).
    """
    flops = FlopCountAnalysis(model, image)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return flops.total() / 1e9, flops.by_module()["bottom_up"] / 1e9


def time_designs(designs, image, runs, warmup, device):
    """
    Times each nested design paired with FPN: FPN right before it (even rounds) or right after
    it (odd rounds), so that both runs of a pair see the same machine load. Every round times
    every nested design once, in an order rotated from round to round.

    Returns:
        dict[str -> list[(float, float)]]: for each nested design, the (design, FPN) wall-clock
        seconds of each timed pair.
    """

    def seconds(model):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    nested = [name for name in designs if name != "FPN"]
    pairs = {name: [] for name in nested}
    with torch.inference_mode():
        for round_index in range(warmup + runs):
            shift = round_index % len(nested)
            for name in nested[shift:] + nested[:shift]:
                if round_index % 2 == 0:
                    fpn_seconds = seconds(designs["FPN"])
                    design_seconds = seconds(designs[name])
                else:
                    design_seconds = seconds(designs[name])
                    fpn_seconds = seconds(designs["FPN"])
                if round_index >= warmup:
                    pairs[name].append((design_seconds, fpn_seconds))
    return pairs


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    designs = build_designs(args)
    image = torch.randn(1, 3, args.size, args.size, device=args.device)

    rows = {}
    for name, model in designs.items():
        gmacs, bottom_up_gmacs = count_gmacs(model, image)
        rows[name] = {
            "params": count_params(model) / 1e6,
            "neck_params": (count_params(model) - count_params(model.bottom_up)) / 1e6,
            "gmacs": gmacs,
            "neck_gmacs": gmacs - bottom_up_gmacs,
        }
    pairs = time_designs(designs, image, args.runs, args.warmup, args.device)
    fpn_seconds = [fpn for design_pairs in pairs.values() for _, fpn in design_pairs]
    rows["FPN"].update(
        ms=1000 * statistics.median(fpn_seconds), min_ms=1000 * min(fpn_seconds), paired=1.0
    )
    for name, design_pairs in pairs.items():
        design_seconds = [design for design, _ in design_pairs]
        rows[name].update(
            ms=1000 * statistics.median(design_seconds),
            min_ms=1000 * min(design_seconds),
            paired=statistics.median(design / fpn for design, fpn in design_pairs),
        )

    fpn = rows["FPN"]
    print(
        f"ResNet-{args.depth} bottom-up, OUT_CHANNELS {args.out_channels}, "
        f"{args.size}x{args.size}, {args.device}, {args.threads} threads, random weights, "
        f"{args.runs} timed runs per nested design (each paired with an FPN run) after "
        f"{args.warmup} warm-up rounds; FPN over all {len(fpn_seconds)} of its timed runs."
    )
    columns = {
        "params M (neck)": lambda r: f"{r['params']:.2f} ({r['neck_params']:.2f})",
        "GMACs (neck)": lambda r: f"{r['gmacs']:.1f} ({r['neck_gmacs']:.1f})",
        "GMACs / FPN": lambda r: f"{r['gmacs'] / fpn['gmacs']:.2f}x",
        "median ms": lambda r: f"{r['ms']:.0f}",
        "median / FPN": lambda r: f"{r['ms'] / fpn['ms']:.2f}x",
        "min ms": lambda r: f"{r['min_ms']:.0f}",
        "min / FPN": lambda r: f"{r['min_ms'] / fpn['min_ms']:.2f}x",
        "median of paired ratios": lambda r: f"{r['paired']:.2f}x",
    }
    print("| design (skip/fusion/node conv) | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(cell(row) for cell in columns.values()) + " |")


if __name__ == "__main__":
    main()
