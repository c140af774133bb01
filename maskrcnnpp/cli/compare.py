"""
Compare models over seeds, with error bars and the classical (Otsu + watershed) floor.

Each --model is NAME=CONFIG.yaml followed by its own KEY VALUE overrides (Detectron2's opts),
or NAME=peer:stardist / NAME=peer:cellpose, a peer trained from scratch by its own recipe by
tools/train_peer.py in .venv-peers (overrides TRAIN_MINUTES, DATASETS.TRAIN, DATASETS.TEST;
docs/peers.md). Every (model, seed) is trained into OUTPUT_ROOT/NAME/seed<k>/ and scored
on the config's DATASETS.TEST; a rerun skips finished runs (final_metrics.json present) and
continues stopped ones (last_checkpoint present) with --resume. Then OUTPUT_ROOT gets
comparison.md, comparison.json and comparison.png:

  - per model: every metric as mean ± sample standard deviation (ddof=1) over seeds, the number
    of seeds and the training minutes per run (wall time of train_net.py, evaluation included);
  - per --pair A B: the paired per-image difference B - A of the DSB score and the fg IoU (each
    image averaged over the seeds of each model), mean and percentile bootstrap 95% CI.

Examples:

  python tools/compare.py --output-root output/compare --seeds 0 1 2 \\
      --model fpn=configs/quick/mask_rcnn_FPN.yaml \\
      --model nested=configs/quick/mask_rcnn_NestedFPN.yaml MODEL.NESTED_FPN.FUSION concat \\
      --pair fpn nested --pair classical nested --jobs 2

  # StarDist and Cellpose beside our model, 60 training minutes each (bash tools/setup_env.sh --peers):
  python tools/compare.py --output-root output/compare --seeds 0 1 2 \\
      --model nested=configs/DSB2018/cpu/mask_rcnn_R_18_NestedFPN.yaml \\
      --model stardist=peer:stardist --model cellpose=peer:cellpose \\
      --pair stardist nested --pair cellpose nested

  # the same overrides for every model (the model's own win):
  python tools/compare.py ... --opts SOLVER.MAX_ITER 200 DATALOADER.NUM_WORKERS 0

The classical baseline is called "classical" in --pair and its row is on unless --no-baseline.
"""

import argparse
import logging
import sys

from detectron2.utils.logger import setup_logger

from maskrcnnpp.comparison.runs import parse_model_spec
from maskrcnnpp.comparison.tables import run_comparison
from maskrcnnpp.utils.cli import exit_on_errors


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        nargs="+",
        required=True,
        metavar=("NAME=CONFIG.yaml|peer:KIND", "KEY VALUE"),
        help="a model to compare, with its own overrides; repeat for each model",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default: 0 1 2")
    parser.add_argument("--output-root", required=True, help="runs and the comparison go here")
    parser.add_argument(
        "--pair",
        action="append",
        nargs=2,
        default=[],
        metavar=("A", "B"),
        help="show the paired per-image difference B - A; repeatable",
    )
    parser.add_argument(
        "--opts",
        nargs="+",
        default=[],
        metavar="KEY VALUE",
        help="overrides for every model, before the model's own",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="trainings at once (default 1: one after another)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS of each training (default: CPU count / --jobs)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="leave out the classical row")
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="train nothing: tabulate the runs already finished, name the others",
    )
    parser.add_argument("--bootstrap-resamples", type=int, default=10000)
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logger(name="maskrcnnpp")
    logging.getLogger("maskrcnnpp").setLevel(logging.INFO)
    # bad arguments (checked before the first training) and no finished run: one line, exit 2
    with exit_on_errors("compare: error", (KeyError, ValueError, FileNotFoundError)):
        models = [parse_model_spec(tokens) for tokens in args.model]
        run_comparison(
            models,
            args.seeds,
            args.output_root,
            pairs=[tuple(p) for p in args.pair],
            common_opts=args.opts,
            jobs=args.jobs,
            threads=args.threads,
            baseline=not args.no_baseline,
            resamples=args.bootstrap_resamples,
            bootstrap_seed=args.bootstrap_seed,
            train=not args.table_only,
        )
    print(open(f"{args.output_root}/comparison.md").read())


if __name__ == "__main__":
    sys.exit(main())
