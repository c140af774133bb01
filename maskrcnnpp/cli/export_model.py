"""
Export a trained model to TorchScript (tracing), ONNX or a BioImage Model Zoo package, check
that the export's outputs match the eager model's on sample images, and write it only when
they do.

    tools/export_model.py {--model NAME | --config-file C} --format {torchscript,onnx,bioimageio} --output DIR \
        [--sample-image PATH ...] [KEY VALUE ...]

``--model NAME`` exports a shipped model (maskrcnnpp.model_zoo). Weights come from ``MODEL.WEIGHTS``, every weight of the model (an empty one, a random
model, is refused: exit status 2). ``--sample-image`` may be repeated and take files, folders or globs; without it the
first images of the config's ``DATASETS.TEST[0]`` are used, or synthetic nuclei when that
dataset is not prepared. Writes ``DIR/model.ts`` or ``DIR/model.onnx`` and
``DIR/export_info.json`` (inputs, outputs, post-processing, the check's largest absolute
difference per output). ``bioimageio`` writes ``DIR/bioimageio.zip`` and the same package
unpacked in ``DIR/bioimageio/`` (``rdf.yaml``, TorchScript ``weights.pt`` with the
post-processing inside, test tensors, cover, model card, licence), after ``bioimageio.core``'s
model test passed on it; the first sample image is the package's test input. Exit status: 0
written, 1 outputs differ (or the bioimage.io test failed), 2 cannot export.
"""

# the known-warning filters go in before Detectron2's imports (E402: imports after code)
# ruff: noqa: E402
import argparse
import json
import logging
import os
import sys

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

import maskrcnnpp  # noqa: F401  registers the project's models and datasets
from maskrcnnpp.checkpoint import load_model_weights
from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.export import (
    DEFAULT_ONNX_OPSET,
    EXPORT_FORMATS,
    ExportMismatchError,
    OnnxExportError,
    OutputTolerance,
    export_model,
    load_sample_inputs,
)
from maskrcnnpp.model_zoo import add_model_arguments, config_file_of
from maskrcnnpp.utils.output_folder import check_writable_folder

logger = logging.getLogger("maskrcnnpp.export_model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS))
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="folder for the exported model"
    )
    parser.add_argument(
        "--sample-image",
        action="append",
        default=[],
        metavar="PATH",
        help="image file, folder or glob to check the export on (repeat for more)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=2,
        help="images taken from the TEST dataset or synthesised when no --sample-image is given",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_ONNX_OPSET,
        help="ONNX opset (>= 16 for Mask R-CNN's aligned RoIAlign)",
    )
    parser.add_argument(
        "--box-atol",
        type=float,
        default=OutputTolerance.box_atol,
        help="box coordinate tolerance, pixels",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=OutputTolerance.atol,
        help="score / mask probability / sem_seg tolerance",
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=OutputTolerance.rtol,
        help="relative tolerance of sem_seg and other outputs",
    )
    parser.add_argument(
        "--no-ir-dump", action="store_true", help="skip Detectron2's TorchScript IR dump"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    stray = [o for o in args.opts[::2] if os.path.isfile(o)]
    if stray:
        parser.error(
            f"{stray[0]} is a file among the KEY VALUE overrides: give one --sample-image per image path"
        )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="maskrcnnpp")
    try:
        check_writable_folder(args.output, "--output")  # before the model is built
        cfg = setup_cfg(config_file_of(args), args.opts)
        model = build_model(cfg).to(torch.device(cfg.MODEL.DEVICE)).eval()
        load_model_weights(model, cfg.MODEL.WEIGHTS)
        samples = load_sample_inputs(cfg, args.sample_image, count=args.num_samples)
    except (KeyError, ValueError, OSError) as e:  # config, weights, unreadable sample image
        print(
            f"export_model: {e.args[0] if isinstance(e, KeyError) and e.args else e}",
            file=sys.stderr,
        )
        return 2
    logger.info("Sample images: %s", ", ".join(s.source for s in samples))
    tolerance = OutputTolerance(box_atol=args.box_atol, atol=args.atol, rtol=args.rtol)
    try:
        info = export_model(
            cfg,
            model,
            samples,
            export_format=args.format,
            output_dir=args.output,
            opset=args.opset,
            tolerance=tolerance,
            dump_ir=not args.no_ir_dump,
            config_file=config_file_of(args),
        )
    except ExportMismatchError as e:
        print(f"export_model: {args.format} export NOT written: {e}", file=sys.stderr)
        return 1
    except (OnnxExportError, ValueError, ImportError) as e:
        print(f"export_model: {args.format} export NOT written: {e}", file=sys.stderr)
        return 2
    path = os.path.join(args.output, info["file"])
    print(
        f"Wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB); checked on {len(samples)} image(s)"
    )
    print("max abs difference exported vs eager: " + json.dumps(info["check"]["max_abs_diff"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
