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

One run per output folder: a folder that is not empty is refused unless --overwrite is given,
which removes the files of a previous run of this tool (the layout above) and nothing else.
The folder is checked (a file, not writable, not empty) before the model is built.

Ctrl-C (SIGINT) or SIGTERM stops the run after the image being written: the COCO files then
list exactly the images whose files are complete, one line says how many, and the exit
status is 130 (SIGINT) or 143 (SIGTERM).

Exit status: 0 when every image was predicted; 1 when some input could not be read or
predicted (each is named on stderr with the reason, the others are still processed); 2 when
nothing could run (bad config, key, weights, output folder or no input), in one line
(MASKRCNNPP_TRACEBACK=1 adds the traceback).
"""

import argparse
import contextlib
import logging
import signal
import sys
import threading

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from tqdm import tqdm

import maskrcnnpp  # noqa: F401  registers maskrcnnpp's models
from maskrcnnpp.data.image_io import ImageReadError, read_image_rgb
from maskrcnnpp.engine import setup_cfg
from maskrcnnpp.inference import (
    NucleiPredictor,
    PredictionWriter,
    check_output_dir,
    collect_image_files,
    prepare_output_dir,
    unique_output_names,
)
from maskrcnnpp.utils.cli import print_error


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Predict nuclei in images with a maskrcnnpp model.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    parser.add_argument(
        "--input", required=True, nargs="+", metavar="PATH", help="image files, folders or globs"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="reuse a non-empty --output: remove a previous prediction run's files there first",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE, e.g. MODEL.WEIGHTS m.pth"
    )
    return parser.parse_args(argv)


def _error(message):
    tqdm.write(f"error: {message}", file=sys.stderr)


class _Interrupted(BaseException):
    """SIGINT or SIGTERM; a BaseException, so that no per-image ``except Exception`` eats it."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """Turns SIGINT / SIGTERM into :class:`_Interrupted`, deferred while an image's files are
    being written (``with guard.deferred():``) so that no image is left half written."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.pending = None
        self._deferring = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self._deferring:
            self.pending = signum
        else:
            raise _Interrupted(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    def hold(self):
        """From now on, signals only set ``pending``."""
        self._deferring = True

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.pending is not None:
            raise _Interrupted(self.pending)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(levelname)s: %(message)s")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print_error("error", e)
        return 2
    files, problems = collect_image_files(args.input)
    for item, reason in problems:
        _error(f"skipped {item}: {reason}")
    if not files:
        _error("no image to predict")
        return 2
    try:
        check_output_dir(args.output, overwrite=args.overwrite)  # before the slow part
        predictor = NucleiPredictor(cfg)
        prepare_output_dir(args.output, overwrite=args.overwrite)
    except (KeyError, ValueError, OSError) as e:  # OutputFolderError is a ValueError
        print_error("error", e)
        return 2

    writer = PredictionWriter(args.output)
    failed, num_nuclei = len(problems), 0
    names = unique_output_names(files)
    interrupted = None
    with _SignalGuard() as guard:
        try:
            for image_id, (path, name) in enumerate(
                tqdm(list(zip(files, names)), unit="image", disable=None), 1
            ):
                try:
                    image = read_image_rgb(path)
                except ImageReadError as e:
                    _error(f"skipped {e.path}: {e.reason}")
                    failed += 1
                    continue
                try:
                    prediction = predictor(image)
                    with guard.deferred():
                        num_nuclei += writer.write_image(image_id, name, path, image, prediction)
                except Exception as e:  # out of memory, > 65535 nuclei, disk full, OpenCV errors
                    _error(f"skipped {path}: {type(e).__name__}: {e}")
                    failed += 1
        except _Interrupted as e:
            interrupted = e.signum
        # the COCO files of the finished images, also after a signal (a second one waits)
        guard.hold()
        writer.close()
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        tqdm.write(
            f"interrupted by {name}: {len(writer.images)} of {len(files)} image(s) done, "
            f"{num_nuclei} nuclei; their files and COCO results are in {args.output}",
            file=sys.stderr,
        )
        return 128 + interrupted
    print(
        f"{len(writer.images)} image(s), {num_nuclei} nuclei written to {args.output}"
        + (f"; {failed} input(s) failed (see above)" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
