"""
Train and evaluate maskrcnnpp models (Mask R-CNN, Mask R-CNN++, semantic UNet++) with
Detectron2's DefaultTrainer. Usual Detectron2 flags:

    python tools/train_net.py --config-file configs/quick/mask_rcnn_NestedFPN.yaml
    python tools/train_net.py --config-file C --num-gpus 2            # GLOO on a CPU machine
    python tools/train_net.py --config-file C --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file C --resume                 # continue a run

Writes into OUTPUT_DIR: checkpoints, metrics.json, training_curves.png, final_metrics.json,
and inference/<dataset>/ (COCO results, worst-image pictures when TEST.NUCLEI.NUM_VIS > 0).
"""

# the known-warning filters go in before Detectron2's imports (E402: imports after code)
# ruff: noqa: E402
import glob
import logging
import os
import sys

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models and datasets
from maskrcnnpp.checkpoint import AtomicDetectionCheckpointer
from maskrcnnpp.checkpoint.checkpointer import WeightsError
from maskrcnnpp.config import check_datasets_registered, setup_cfg
from maskrcnnpp.config.checks import check_datasets_ready
from maskrcnnpp.engine import NucleiTrainer as Trainer
from maskrcnnpp.evaluation import format_results_table
from maskrcnnpp.evaluation.run_records import (
    final_metrics_path,
    read_final_metrics,
    write_final_metrics,
)
from maskrcnnpp.utils.cli import exit_on_errors, exit_on_interrupt
from maskrcnnpp.utils.cpu_memory import keep_freed_memory
from maskrcnnpp.utils.output_folder import check_writable_folder

# Config and checkpoint errors: one line on stderr and exit status 2 (MASKRCNNPP_TRACEBACK=1
# adds the traceback).
_ERROR_PREFIX = "train_net: error"


def setup(args):
    cfg = setup_cfg(args.config_file, args.opts)
    keys = ("DATASETS.TEST",) if args.eval_only else ("DATASETS.TRAIN", "DATASETS.TEST")
    check_datasets_registered(cfg, keys)
    check_datasets_ready(cfg, keys)  # prepared, images in place: before the model is built
    check_writable_folder(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="maskrcnnpp")
    return cfg


def _row_label(config_file, output_dir):
    """A table row's name: the config's name, plus the output folder when it differs."""
    name = os.path.splitext(os.path.basename(config_file))[0] or "model"
    folder = os.path.basename(os.path.normpath(output_dir))
    return name if folder == name else f"{name} ({folder})"


def _report(cfg, results, args):
    """Print the metrics table, beside the runs in sibling output folders scored on the same
    dataset (e.g. output/quick/mask_rcnn_FPN next to output/quick/mask_rcnn_NestedFPN), and
    keep the numbers in OUTPUT_DIR/final_metrics.json."""
    if not comm.is_main_process() or not results:
        return
    label = _row_label(args.config_file, cfg.OUTPUT_DIR)
    # DefaultTrainer.test() returns {dataset: results}, flattened when there is one dataset
    per_dataset = (
        results if set(results) <= set(cfg.DATASETS.TEST) else {cfg.DATASETS.TEST[0]: results}
    )
    write_final_metrics(cfg.OUTPUT_DIR, per_dataset, config_file=args.config_file)
    siblings = sorted(
        glob.glob(
            final_metrics_path(os.path.join(os.path.dirname(os.path.abspath(cfg.OUTPUT_DIR)), "*"))
        )
    )
    for dataset_name, res in per_dataset.items():
        rows = {label: res}
        for path in siblings:
            if os.path.samefile(os.path.dirname(path), cfg.OUTPUT_DIR):
                continue
            try:
                other = read_final_metrics(os.path.dirname(path))
                other_results = other["results"].get(dataset_name)
                other_label = _row_label(
                    other["config_file"] or other.get("method"), os.path.dirname(path)
                )
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
                logging.getLogger("maskrcnnpp").warning("skipping %s: unreadable (%s)", path, e)
                continue
            if other_results is not None:
                rows[other_label] = other_results
        print(f"\nResults on {dataset_name} (COCO AP in %, nuclei metrics as fractions):")
        print(format_results_table(rows))


def train(args):
    """One process's run (Detectron2's ``launch`` calls it in every process): train and evaluate,
    or evaluate only (``--eval-only``); returns the evaluation results or None."""
    keep_freed_memory()  # large CPU tensors without fresh page faults (maskrcnnpp/utils/cpu_memory.py)
    with exit_on_errors(_ERROR_PREFIX, (KeyError, ValueError, FileNotFoundError)):
        cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # every weight must come from the checkpoint: a wrong file is refused, not evaluated
        with exit_on_errors(_ERROR_PREFIX, WeightsError):
            AtomicDetectionCheckpointer(
                model, save_dir=cfg.OUTPUT_DIR, require_all_weights=True
            ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        _report(cfg, results, args)
        return results
    with exit_on_errors(_ERROR_PREFIX, (ValueError,)):  # e.g. frozen layers without weights
        trainer = Trainer(cfg)
    with exit_on_errors(_ERROR_PREFIX, WeightsError):  # a checkpoint matching no weight
        trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # DefaultTrainer.train() returns the final evaluation only when TEST.EXPECTED_RESULTS is set
    results = getattr(trainer, "_last_eval_results", None)
    _report(cfg, results, args)
    return results


def main(argv=None):
    """``tools/train_net.py`` / ``maskrcnnpp-train``: Detectron2's flags, then ``KEY VALUE``
    overrides; ``--num-gpus N`` trains in N processes. Returns the exit status (0; errors exit
    with status 2, Ctrl-C by SIGINT)."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    with exit_on_interrupt(
        "train_net", "--resume continues from the last checkpoint in OUTPUT_DIR"
    ):
        # ``train`` is pickled by name into launch's worker processes: a module-level function
        launch(
            train,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
