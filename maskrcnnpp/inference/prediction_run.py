"""One prediction run of tools/predict.py: the inputs, the output folder, the loop over the
images, the signals and the exit status (the tool's docstring describes them for users)."""

import signal
import sys
from typing import Optional, Sequence

from tqdm import tqdm

from ..data.image_io import ImageReadError, read_image_rgb
from ..utils.cli import print_error
from ..utils.signal_guard import Interrupted, SignalGuard
from .input_files import collect_image_files, unique_output_names
from .prediction_writer import PredictionWriter, check_output_dir, prepare_output_dir
from .predictor import NucleiPredictor

__all__ = ["LOOKAHEAD_BATCHES", "predict_to_folder"]

# With TEST.PREDICT.BATCH_SIZE B > 1, images are read and predicted LOOKAHEAD_BATCHES * B at a
# time (same-size ones grouped into batches), then written in input order.
LOOKAHEAD_BATCHES = 4


def _error(message):
    tqdm.write(f"error: {message}", file=sys.stderr)


def _predictions(predictor: NucleiPredictor, read):
    """
    Args:
        read (list[(image id, path, name, (H, W, 3) uint8 image)]): images read in a row.

    Yields:
        (image id, path, name, image, NucleiPrediction or the Exception it raised), in order:
        the images predicted together, or, when that fails, one by one (so that only the
        images that fail alone are skipped, each with its own error).
    """
    if len(read) > 1:
        try:
            predictions = predictor.predict_images([image for *_, image in read])
        except Exception:  # e.g. out of memory for the batch; retried image by image
            predictions = None
        if predictions is not None:
            for item, prediction in zip(read, predictions):
                yield (*item, prediction)
            return
    for item in read:
        try:
            prediction = predictor(item[-1])
        except Exception as e:
            prediction = e
        yield (*item, prediction)


def predict_to_folder(
    cfg,
    inputs: Sequence[str],
    output_dir: str,
    *,
    overwrite: bool = False,
    extra_outputs: Sequence[str] = (),
    predictor: Optional[NucleiPredictor] = None,
) -> int:
    """
    Predict the nuclei of ``inputs`` with the model of ``cfg`` and write them into
    ``output_dir`` (layout: :mod:`maskrcnnpp.inference.prediction_writer`).

    Args:
        cfg (CfgNode): the model's config, MODEL.WEIGHTS included.
        inputs (list[str]): image files, folders and glob patterns.
        output_dir (str): the output folder, new or empty unless ``overwrite``.
        overwrite (bool): remove a previous run's files from ``output_dir`` first.
        extra_outputs (list[str]): also write these formats (names of
            :data:`~maskrcnnpp.inference.prediction_writer.EXTRA_OUTPUTS`).
        predictor (NucleiPredictor): predict with it instead of building one from ``cfg``
            (the benchmark reuses one model for several runs).

    Returns:
        int: the exit status: 0 every image predicted; 1 some input skipped (each named on
        stderr); 2 nothing could run (no input, bad output folder or weights: one line on
        stderr); 128 + the signal number after SIGINT / SIGTERM (the finished images' files
        and COCO results are kept).
    """
    writer = PredictionWriter(output_dir, extra_outputs)  # refuses an unknown format first
    files, problems = collect_image_files(inputs)
    for item, reason in problems:
        _error(f"skipped {item}: {reason}")
    if not files:
        _error("no image to predict")
        return 2
    try:
        check_output_dir(output_dir, overwrite=overwrite)  # before the slow part
        predictor = predictor or NucleiPredictor(cfg)
        prepare_output_dir(output_dir, overwrite=overwrite)
    except (KeyError, ValueError, OSError) as e:  # OutputFolderError is a ValueError
        print_error("error", e)
        return 2

    failed, num_nuclei = len(problems), 0
    names = unique_output_names(files)
    # up to this many images are read ahead, so that same-size ones share model calls
    window = predictor.batch_size * LOOKAHEAD_BATCHES if predictor.batch_size > 1 else 1
    interrupted = None
    with SignalGuard() as guard:
        try:
            progress = tqdm(total=len(files), unit="image", disable=None)
            jobs = list(enumerate(zip(files, names), 1))  # (image id, (path, name))
            for start in range(0, len(jobs), window):
                read = []  # (image id, path, name, image)
                for image_id, (path, name) in jobs[start : start + window]:
                    try:
                        read.append((image_id, path, name, read_image_rgb(path)))
                    except ImageReadError as e:
                        _error(f"skipped {e.path}: {e.reason}")
                        failed += 1
                        progress.update()
                for image_id, path, name, image, prediction in _predictions(predictor, read):
                    try:
                        if isinstance(prediction, Exception):
                            raise prediction
                        with guard.deferred():
                            num_nuclei += writer.write_image(image_id, name, path, image, prediction)
                    except Exception as e:  # out of memory, > 65535 nuclei, disk full, OpenCV errors
                        _error(f"skipped {path}: {type(e).__name__}: {e}")
                        failed += 1
                    progress.update()
            progress.close()
        except Interrupted as e:
            interrupted = e.signum
        # the COCO files of the finished images, also after a signal (a second one waits)
        guard.hold()
        writer.close()
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        tqdm.write(
            f"interrupted by {name}: {len(writer.images)} of {len(files)} image(s) done, "
            f"{num_nuclei} nuclei; their files and COCO results are in {output_dir}",
            file=sys.stderr,
        )
        return 128 + interrupted
    print(
        f"{len(writer.images)} image(s), {num_nuclei} nuclei written to {output_dir}"
        + (f"; {failed} input(s) failed (see above)" if failed else "")
    )
    return 1 if failed else 0
