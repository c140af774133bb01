"""
Predict the nuclei of your own images with a trained model:

    python tools/predict.py --model mask_rcnnpp_nuclei --input images/ --output predictions/

    python tools/predict.py --config-file configs/DSB2018/mask_rcnn_R_50_NestedFPN.yaml \
        --input images/ more/*.tif one.png --output predictions/ \
        [--extra-outputs geojson imagej-rois label-tiff] \
        MODEL.WEIGHTS output/.../model_final.pth [KEY VALUE ...]

Inputs: files, folders (their .png/.jpg/.jpeg/.tif/.tiff/.bmp files) and glob patterns;
grayscale, RGB or RGBA, 8 or 16 bit, any size. Multi-channel TIFFs (CYX or YXC, ImageJ
hyperstacks, OME-TIFF) need --channel C (or TEST.PREDICT.CHANNEL): the nuclear channel's
0-based index or name (OME channel name, ImageJ label), read as a grayscale image; without it
such a file is skipped with a list of its channels; a Z or T axis is refused. Images with a side longer than
TEST.PREDICT.MAX_UNTILED_SIZE are predicted in overlapping tiles (TEST.PREDICT.TILE_SIZE,
TEST.PREDICT.TILE_OVERLAP >= the largest nucleus) and each nucleus is kept once, from the tile
that sees it whole. Nuclei with score >= TEST.PREDICT.SCORE_THRESH are written. Works for
instance models (Mask R-CNN, Mask R-CNN++) and semantic ones (UNet++: connected components).

Writes into --output (see maskrcnnpp/inference/prediction_writer.py): labels/<name>.png (16-bit
label image), overlays/<name>.png, measurements/<name>.csv, coco_instances_results.json and
coco_images.json. KEY VALUE overrides go last (after --output and --extra-outputs).

--extra-outputs FORMAT [FORMAT ...] writes, per image, also (none by default):
    geojson       geojson/<name>.geojson: QuPath detections (File > Import objects)
    imagej-rois   rois/<name>.zip: an ImageJ / Fiji ROI set (ROI Manager > More > Open)
    label-tiff    labels_tiff/<name>.tif: the label image as a TIFF (a napari labels layer)
one object per nucleus, named nucleus-<label>; outlines along the pixel edges, (0, 0) the
top-left corner of the top-left pixel (maskrcnnpp/inference/exchange_formats.py).

One run per output folder: a folder that is not empty is refused unless --overwrite is given,
which removes the files of a previous run of this tool (the layout above, every format's) and
nothing else, or --resume (below). The folder is checked (a file, not writable, not empty) before the model is built.

One writer per output folder: a second run into a folder another run is writing into is
refused (exit status 2), before any work.

Ctrl-C (SIGINT) or SIGTERM stops the run after the image being written: the COCO files then
list exactly the images whose files are complete, one line says how many, and the exit
status is 130 (SIGINT) or 143 (SIGTERM). A write that fails (a full disk) stops the run at
once: that image's files are removed, the finished ones and their COCO files kept, one line,
exit status 1. --resume (the same command plus --resume) finishes a stopped run, also one
that was killed: the images it finished are kept (same input file, all their files
present), the rest predicted, and the COCO files list all of them.

Exit status: 0 when every image was predicted; 1 when some input could not be read or
predicted (each is named on stderr with the reason, the others are still processed) or a
write failed (see above); 2 when
nothing could run (bad config, key, weights, output folder or no input), in one line
(MASKRCNNPP_TRACEBACK=1 adds the traceback).

The work is :func:`maskrcnnpp.inference.prediction_run.predict_to_folder`.
"""

# the known-warning filters go in before Detectron2's imports (E402: imports after code)
# ruff: noqa: E402
import argparse
import logging
import sys

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models
from maskrcnnpp.config import setup_cfg
from maskrcnnpp.inference.input_files import looks_like_config_key
from maskrcnnpp.inference.prediction_run import predict_to_folder
from maskrcnnpp.inference.prediction_writer import EXTRA_OUTPUTS
from maskrcnnpp.model_zoo import add_model_arguments, config_file_of
from maskrcnnpp.utils.cli import print_error
from maskrcnnpp.utils.cpu_memory import keep_freed_memory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Predict nuclei in images with a maskrcnnpp model."
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--input", required=True, nargs="+", metavar="PATH", help="image files, folders or globs"
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="output folder (new or empty)"
    )
    reuse = parser.add_mutually_exclusive_group()
    reuse.add_argument(
        "--overwrite",
        action="store_true",
        help="reuse a non-empty --output: remove a previous prediction run's files there first",
    )
    reuse.add_argument(
        "--resume",
        action="store_true",
        help="finish a stopped run into --output (same inputs): keep the images it finished, "
        "predict the rest",
    )
    parser.add_argument(
        "--extra-outputs",
        nargs="+",
        default=[],
        metavar="FORMAT",
        help=f"also write, per image: {', '.join(EXTRA_OUTPUTS)} (QuPath GeoJSON, Fiji ROI set, "
        "napari label TIFF); default: none",
    )
    parser.add_argument(
        "--channel",
        metavar="C",
        help="of multi-channel TIFFs, the nuclear channel: 0-based index or name (sets "
        "TEST.PREDICT.CHANNEL; of RGB images, 0/red, 1/green or 2/blue)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides KEY VALUE, e.g. MODEL.WEIGHTS m.pth",
    )
    args = parser.parse_args(argv)
    # argparse hands --extra-outputs every word up to the next option: the KEY VALUE overrides
    # that follow the formats are the overrides'.
    for index, value in enumerate(args.extra_outputs):
        if value not in EXTRA_OUTPUTS:
            if not index or not value[:1].isupper():
                parser.error(
                    f"argument --extra-outputs: invalid choice: {value!r} (choose from "
                    f"{', '.join(EXTRA_OUTPUTS)})"
                )
            args.opts = args.extra_outputs[index:] + args.opts
            args.extra_outputs = args.extra_outputs[:index]
            break
    # ... and --input every word up to the next option: overrides there would be lost
    swallowed = [item for item in args.input if looks_like_config_key(item)]
    if swallowed:
        parser.error(
            f"argument --input: {swallowed[0]!r} looks like a config key: put KEY VALUE "
            "overrides last, after --output DIR and the other options"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()  # large CPU tensors without fresh page faults (maskrcnnpp/utils/cpu_memory.py)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(levelname)s: %(message)s")
    try:
        cfg = setup_cfg(config_file_of(args), args.opts, freeze=False)
        if args.channel is not None:
            cfg.TEST.PREDICT.CHANNEL = args.channel  # text: parse_channel reads digits as an index
        cfg.freeze()
    except (KeyError, ValueError, FileNotFoundError) as e:
        print_error("error", e)
        return 2
    return predict_to_folder(
        cfg,
        args.input,
        args.output,
        overwrite=args.overwrite,
        extra_outputs=args.extra_outputs,
        resume=args.resume,
    )


if __name__ == "__main__":
    sys.exit(main())
