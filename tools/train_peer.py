#!/usr/bin/env python
"""
Train a peer (StarDist 2D or Cellpose 3) from scratch by its own documented recipe
(docs/peers.md) on a registered dataset for a CPU-time budget, predict the test dataset and
score it with our evaluator, into a run folder laid out like tools/train_net.py's
(final_metrics.json, inference/<test dataset>/nuclei_per_image.json). The peers run in
.venv-peers (`bash tools/setup_env.sh --peers`); tools/compare.py calls this for its
`--model NAME=peer:KIND` rows.

    python tools/train_peer.py --peer stardist --output-dir output/peers/stardist/seed0 --seed 0
    python tools/train_peer.py --peer cellpose --output-dir D --seed 1 --minutes 60 --resume

Exit status: 0 done, 1 the peer's training or prediction failed, 2 nothing could run (bad
arguments, no .venv-peers, an unknown dataset).
"""

import argparse
import logging
import os
import sys

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from detectron2.utils.logger import setup_logger  # noqa: E402

import maskrcnnpp  # noqa: E402, F401  registers the datasets
from maskrcnnpp.comparison.peers.runs import (  # noqa: E402
    DEFAULT_TRAIN_MINUTES,
    PEER_KINDS,
    PeersNotInstalled,
    peers_python,
    run_peer,
)
from maskrcnnpp.utils.cli import exit_on_errors, print_error  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peer", required=True, choices=sorted(PEER_KINDS))
    parser.add_argument("--output-dir", required=True, help="the run folder")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_TRAIN_MINUTES,
        help=f"training budget: minutes on --cores busy cores, in CPU time "
        f"(default {DEFAULT_TRAIN_MINUTES:g})",
    )
    parser.add_argument(
        "--cores", type=int, default=None, help="the cores of the budget (default: the CPU count)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="compute threads (default: OMP_NUM_THREADS, else the CPU count)",
    )
    parser.add_argument("--train-dataset", default="dsb2018_train")
    parser.add_argument("--test-dataset", default="dsb2018_val")
    parser.add_argument(
        "--data-cache",
        default=None,
        help="where the exported datasets are kept (default: $MASKRCNNPP_CACHE/peer_data, "
        "~/.cache/maskrcnnpp/peer_data)",
    )
    parser.add_argument("--resume", action="store_true", help="continue a stopped training")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logger(name="maskrcnnpp")
    logging.getLogger("maskrcnnpp").setLevel(logging.INFO)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    with exit_on_errors("train_peer.py", (PeersNotInstalled, ValueError, FileNotFoundError)):
        peers_python()
    try:
        run_peer(
            args.peer,
            args.output_dir,
            seed=args.seed,
            minutes=args.minutes,
            cores=args.cores,
            threads=threads,
            train_dataset=args.train_dataset,
            test_dataset=args.test_dataset,
            data_cache=args.data_cache,
            resume=args.resume,
        )
    except (ValueError, FileNotFoundError) as e:
        print_error("train_peer.py", e)
        return 2
    except RuntimeError as e:
        print_error("train_peer.py", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
