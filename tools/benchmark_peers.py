#!/usr/bin/env python
"""
Prediction speed of our models against StarDist and Cellpose in one run, same thread count:
a 512x512 and a 1024x1024 DSB image (median of interleaved rounds) and the throughput over
the test dataset, with ratios to the reference (default: the first --peer). What is timed and
how: maskrcnnpp_bench/peer_speed.py. Writes OUTPUT/peer_speed.json and peer_speed.md.

    python tools/benchmark_peers.py --output output/peer_speed --threads 2 \\
        --peer stardist=results/dsb2018_peers/stardist/seed0 \\
        --peer cellpose=results/dsb2018_peers/cellpose/seed0 \\
        --model maskrcnnpp=configs/DSB2018/cpu/mask_rcnnpp_nuclei.yaml MODEL.WEIGHTS RUN/model_final.pth \\
        --model unet=configs/DSB2018/cpu/unet_vgg.yaml MODEL.WEIGHTS RUN/model_final.pth

--model takes NAME=CONFIG.yaml followed by KEY VALUE overrides (MODEL.WEIGHTS among them);
--peer takes NAME=RUN_DIR, a folder of tools/train_peer.py (the peers run in .venv-peers).
Exit status 2 when nothing could run (a missing file, no .venv-peers).
"""

import os
import sys

# the project's own measurements (maskrcnnpp_bench/) sit beside the installed package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse
import logging

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from detectron2.utils.logger import setup_logger  # noqa: E402

import maskrcnnpp  # noqa: E402, F401  registers the datasets
from maskrcnnpp.comparison.peers.runs import PeersNotInstalled  # noqa: E402
from maskrcnnpp.utils.cli import exit_on_errors  # noqa: E402
from maskrcnnpp_bench.peer_speed import format_peer_speed, run_peer_speed, write_peer_speed  # noqa: E402


def _named(value, what):
    name, _, path = value.partition("=")
    if not name or not path:
        raise ValueError(f"{what} {value}: expected NAME=PATH")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {value}: {path} does not exist")
    return name, path


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        nargs="+",
        default=[],
        metavar=("NAME=CONFIG.yaml", "KEY VALUE"),
        help="one of our models; repeatable",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="a peer's run folder; repeatable",
    )
    parser.add_argument(
        "--dataset", default="dsb2018_val", help="the throughput's images (default dsb2018_val)"
    )
    parser.add_argument("--num-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--reference", default=None, help="the model of the ratios (default: the first peer)"
    )
    parser.add_argument(
        "--output", required=True, help="folder of peer_speed.json and peer_speed.md"
    )
    args = parser.parse_args(argv)
    for name in ("maskrcnnpp", "maskrcnnpp_bench"):  # the latter says which table it times
        setup_logger(name=name)
        logging.getLogger(name).setLevel(logging.INFO)
    with exit_on_errors("benchmark_peers.py", (ValueError, FileNotFoundError, PeersNotInstalled)):
        if not args.model and not args.peer:
            raise ValueError("nothing to time: give --model and/or --peer")
        ours = []
        for tokens in args.model:
            name, config_file = _named(tokens[0], "--model")
            if len(tokens[1:]) % 2:
                raise ValueError(f"--model {tokens[0]}: overrides must be KEY VALUE pairs")
            ours.append((name, config_file, tokens[1:]))
        peers = [_named(value, "--peer") for value in args.peer]
        result = run_peer_speed(
            ours,
            peers,
            dataset=args.dataset,
            threads=args.threads,
            rounds=args.rounds,
            warmup=args.warmup,
            num_images=args.num_images,
            reference=args.reference,
        )
    write_peer_speed(result, args.output)
    print(format_peer_speed(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
