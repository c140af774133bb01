"""One prediction run of tools/predict.py: the inputs, the output folder, the loop over the
images, the signals and the exit status (the tool's docstring describes them for users)."""

import os
import signal
import sys
from typing import Sequence

from tqdm import tqdm

from ..data.image_io import ImageReadError, check_channel_choice, parse_channel, read_image_rgb
from ..utils.cli import error_message, print_error
from ..utils.folder_lock import FolderInUseError, exclusive_folder
from ..utils.signal_guard import Interrupted, SignalGuard
from .input_files import collect_image_files, unique_output_names
from .prediction_writer import (
    PROGRESS_FILE,
    PredictionWriter,
    check_output_dir,
    finished_images,
    prepare_output_dir,
)
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
    resume: bool = False,
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
        resume (bool): ``output_dir`` holds a stopped run (interrupted, killed, a full
            disk): keep the images it finished (same input file, every file present) and
            predict the rest; the COCO files then list all of them.

    Returns:
        int: the exit status: 0 every image predicted; 1 some input skipped (each named on
        stderr), or a write failed (a full disk: the run stops at once, one line); 2 nothing
        could run (no input, bad output folder or weights: one line on stderr); 128 + the
        signal number after SIGINT / SIGTERM. After a failed write or a signal the finished
        images' files and COCO results are kept (``resume`` predicts the rest).
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
        check_output_dir(output_dir, overwrite=overwrite or resume)  # before the slow part
        predictor = NucleiPredictor(cfg)
        prepare_output_dir(output_dir, overwrite=overwrite)
    except (KeyError, ValueError, OSError) as e:  # OutputFolderError is a ValueError
        print_error("error", e)
        return 2

    failed, num_nuclei, taken_over = len(problems), 0, 0
    todo = list(enumerate(zip(files, unique_output_names(files)), 1))
    interrupted = write_error = close_error = None
    with SignalGuard() as guard:
        try:
            if resume:
                todo, taken_over, num_nuclei = _take_over_finished(writer, todo)
            for image_id, (path, name) in tqdm(todo, unit="image", disable=None):
                try:
                    image = read_image_rgb(path, channel)
                except ImageReadError as e:
                    _error(f"skipped {e.path}: {e.reason}")
                    failed += 1
                    continue
                try:
                    prediction = predictor(image)
                    for reached in prediction.caps_reached:
                        tqdm.write(f"warning: {path}: {reached}", file=sys.stderr)
                    with guard.deferred():
                        num_nuclei += writer.write_image(image_id, name, path, image, prediction)
                except OSError as e:  # a failed write (a full disk): stop, keep what finished
                    write_error = (path, e)
                    break
                except Exception as e:  # out of memory, > 65535 nuclei, OpenCV errors
                    _error(f"skipped {path}: {type(e).__name__}: {e}")
                    failed += 1
        except Interrupted as e:
            interrupted = e.signum
        except OSError as e:  # recording the taken-over images
            write_error = (output_dir, e)
        # the COCO files of the finished images, also after a signal (a second one waits)
        guard.hold()
        try:
            writer.close()
        except OSError as e:
            close_error = e
    if write_error is not None or close_error is not None:
        _error(_write_failure(output_dir, write_error, close_error, len(writer.images), len(files)))
        return 1
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
        + (f" ({taken_over} image(s) finished by the stopped run, kept)" if resume else "")
        + (f"; {failed} input(s) failed (see above)" if failed else "")
    )
    return 1 if failed else 0


def _take_over_finished(writer: PredictionWriter, todo):
    """The ``(image_id, (path, name))`` of ``todo`` that a stopped run into the writer's
    folder did not finish; the finished ones (same input file, every file present) are
    recorded in ``writer`` under their id of this run. Returns (the rest, the number taken
    over, their nuclei)."""
    finished = finished_images(writer.output_dir)
    rest, taken, nuclei = [], set(), 0
    for image_id, (path, name) in todo:
        entry, results = finished.get(name, ({}, []))
        if entry.get("file_name") == path and all(map(os.path.isfile, writer.image_files(name))):
            writer.add_finished(image_id, entry, results)
            taken.add(name)
            nuclei += len(results)
        else:
            rest.append((image_id, (path, name)))
    dropped = sorted(set(finished) - taken)
    if dropped:
        _error(
            f"note: {len(dropped)} image(s) finished by the stopped run are not among this "
            f"run's inputs (or their input or files changed), e.g. {dropped[0]}: not in the "
            "COCO files (their files are left as they are)"
        )
    tqdm.write(f"resuming: {len(taken)} of {len(todo)} image(s) finished already", file=sys.stderr)
    return rest, len(taken), nuclei


def _write_failure(output_dir, write_error, close_error, done, total) -> str:
    """The one line that says what a failed write (a full disk) stopped and what is kept."""
    if write_error is not None:
        path, error = write_error
        line = f"stopped at {path}: cannot write into {output_dir} ({error_message(error)})"
    else:
        line = f"cannot write into {output_dir} ({error_message(close_error)})"
    if close_error is None:
        return (
            f"{line}; {done} of {total} image(s) done, their files and COCO results kept: free "
            "space and rerun with --resume to predict the rest"
        )
    return (
        f"{line}; the COCO files could not be written: the {done} finished image(s) are "
        f"recorded in {os.path.join(output_dir, PROGRESS_FILE)}: free space and rerun with "
        "--resume"
    )
