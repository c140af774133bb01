#!/usr/bin/env python
"""
Predict the nuclei of your own images with a trained model:

    python tools/predict.py --config-file configs/DSB2018/mask_rcnn_R_50_NestedFPN.yaml \
        --input images/ more/*.tif one.png --output predictions/ \
        MODEL.WEIGHTS output/.../model_final.pth [KEY VALUE ...]

Inputs: files, folders (their .png/.jpg/.jpeg/.tif/.tiff/.bmp files) and glob patterns;
grayscale, RGB or RGBA, 8 or 16 bit, any size. Images with a side longer than
TEST.PREDICT.MAX_UNTILED_SIZE are predicted in overlapping tiles (TEST.PREDICT.TILE_SIZE,
TEST.PREDICT.TILE_OVERLAP >= the largest nucleus) and each nucleus is kept once, from the tile
that sees it whole. Nuclei with score >= TEST.PREDICT.SCORE_THRESH are written. Works for
instance models (Mask R-CNN, Mask R-CNN++) and semantic ones (UNet++: connected components).

Writes into --output (see maskrcnnpp/inference/prediction_writer.py): labels/<name>.png (16-bit
label image), overlays/<name>.png, measurements/<name>.csv, coco_instances_results.json and
coco_images.json. KEY VALUE overrides go last (after --output).

Exit status: 0 when every image was predicted; 1 when some input could not be read or
predicted (each is named on stderr with the reason, the others are still processed); 2 when
nothing could run (bad config, key, weights or no input).
"""

import argparse
import logging
import sys

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from tqdm import tqdm

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models
from maskrcnnpp.data.image_io import ImageReadError, read_image_rgb
from maskrcnnpp.engine import setup_cfg
from maskrcnnpp.inference import (
    NucleiPredictor,
    PredictionWriter,
    collect_image_files,
    unique_output_names,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Predict nuclei in images with a maskrcnnpp model.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    parser.add_argument(
        "--input", required=True, nargs="+", metavar="PATH", help="image files, folders or globs"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE, e.g. MODEL.WEIGHTS m.pth"
    )
    return parser.parse_args(argv)


def _error(message):
    tqdm.write(f"error: {message}", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(levelname)s: %(message)s")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
    except (KeyError, ValueError, FileNotFoundError) as e:
        _error(e.args[0] if e.args else e)
        return 2
    files, problems = collect_image_files(args.input)
    for item, reason in problems:
        _error(f"skipped {item}: {reason}")
    if not files:
        _error("no image to predict")
        return 2
    try:
        predictor = NucleiPredictor(cfg)
    except (KeyError, ValueError, FileNotFoundError) as e:
        _error(e.args[0] if e.args else e)
        return 2

    writer = PredictionWriter(args.output)
    failed, num_nuclei = len(problems), 0
    names = unique_output_names(files)
    for image_id, (path, name) in enumerate(tqdm(list(zip(files, names)), unit="image", disable=None), 1):
        try:
            image = read_image_rgb(path)
        except ImageReadError as e:
            _error(f"skipped {e.path}: {e.reason}")
            failed += 1
            continue
        try:
            prediction = predictor(image)
            num_nuclei += writer.write_image(image_id, name, path, image, prediction)
        except Exception as e:  # out of memory, > 65535 nuclei, disk full, OpenCV errors
            _error(f"skipped {path}: {type(e).__name__}: {e}")
            failed += 1
    writer.close()
    print(
        f"{len(writer.images)} image(s), {num_nuclei} nuclei written to {args.output}"
        + (f"; {failed} input(s) failed (see above)" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
