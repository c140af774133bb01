"""One prediction run of tools/predict.py: the inputs, the output folder, the loop over the
images, the signals and the exit status (the tool's docstring describes them for users)."""

import signal
import sys
from typing import Sequence

from tqdm import tqdm

from ..data.image_io import ImageReadError, check_channel_choice, parse_channel, read_image_rgb
from ..utils.cli import print_error
from ..utils.folder_lock import FolderInUseError, exclusive_folder
from ..utils.signal_guard import Interrupted, SignalGuard
from .input_files import collect_image_files, unique_output_names
from .prediction_writer import PredictionWriter, check_output_dir, prepare_output_dir
from .predictor import NucleiPredictor

__all__ = ["predict_to_folder"]


def _error(message):
    tqdm.write(f"error: {message}", file=sys.stderr)


def predict_to_folder(cfg, inputs: Sequence[str], output_dir: str, **options) -> int:
    """:func:`_predict_to_folder` holding ``output_dir``'s one-writer lock
    (:mod:`maskrcnnpp.utils.folder_lock`): a second run into the same folder at the same time
    is refused in one line, exit status 2, before any work."""
    try:
        with exclusive_folder(output_dir, "--output"):
            return _predict_to_folder(cfg, inputs, output_dir, **options)
    except FolderInUseError as e:
        print_error("error", e)
        return 2


def _predict_to_folder(
    cfg,
    inputs: Sequence[str],
    output_dir: str,
    *,
    overwrite: bool = False,
    extra_outputs: Sequence[str] = (),
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

    Returns:
        int: the exit status: 0 every image predicted; 1 some input skipped (each named on
        stderr); 2 nothing could run (no input, bad output folder or weights: one line on
        stderr); 128 + the signal number after SIGINT / SIGTERM (the finished images' files
        and COCO results are kept).
    """
    writer = PredictionWriter(output_dir, extra_outputs)  # refuses an unknown format first
    try:
        channel = parse_channel(cfg.TEST.PREDICT.CHANNEL)
    except ValueError as e:
        print_error("error", ValueError(f"TEST.PREDICT.CHANNEL (--channel): {e}"))
        return 2
    files, problems = collect_image_files(inputs)
    checked = []
    for path in files:  # multi-channel TIFFs: their axes and channels, before the model is built
        try:
            check_channel_choice(path, channel)
            checked.append(path)
        except ImageReadError as e:
            problems.append((e.path, e.reason))
    files = checked
    for item, reason in problems:
        _error(f"skipped {item}: {reason}")
    if not files:
        _error("no image to predict")
        return 2
    try:
        check_output_dir(output_dir, overwrite=overwrite)  # before the slow part
        predictor = NucleiPredictor(cfg)
        prepare_output_dir(output_dir, overwrite=overwrite)
    except (KeyError, ValueError, OSError) as e:  # OutputFolderError is a ValueError
        print_error("error", e)
        return 2

    failed, num_nuclei = len(problems), 0
    names = unique_output_names(files)
    interrupted = None
    with SignalGuard() as guard:
        try:
            for image_id, (path, name) in enumerate(
                tqdm(list(zip(files, names)), unit="image", disable=None), 1
            ):
                try:
                    image = read_image_rgb(path, channel)
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
