"""
The output folders of the writing tools (issue 32): one writer per folder at a time (a
second run refused in one line, exit status 2, before any work), a full disk stops a
prediction run at the first failed write keeping what finished whole, and ``predict
--resume`` finishes a stopped run. Two real processes in each concurrency test.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import cv2
import pytest
import torch
from detectron2.modeling import build_model

from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data.synthetic_nuclei import (
    generate_synthetic_nuclei_image,
    write_example_label_folder,
)
from maskrcnnpp.utils.folder_lock import FolderInUseError, exclusive_folder

REPO = pathlib.Path(__file__).resolve().parents[2]
RCNN_CONFIG = str(REPO / "configs" / "quick" / "mask_rcnn_NestedFPN.yaml")
CPU = ["MODEL.DEVICE", "cpu"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the quick Mask R-CNN++ (random init, saved as training does)."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(RCNN_CONFIG, CPU))
    path = tmp_path_factory.mktemp("weights") / "rcnn.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return str(path)


def image_folder(folder, count, size=128):
    folder.mkdir()
    for seed in range(count):
        rgb = generate_synthetic_nuclei_image(seed, image_size=(size, size))[0]
        cv2.imwrite(str(folder / f"im{seed:02d}.png"), rgb[:, :, ::-1])
    return folder


def predict_command(weights, inputs, out, *extra):
    return [
        sys.executable,
        str(REPO / "tools" / "predict.py"),
        "--config-file",
        RCNN_CONFIG,
        "--input",
        str(inputs),
        "--output",
        str(out),
        *extra,
        *CPU,
        "MODEL.WEIGHTS",
        weights,
        # every detection kept: random weights, and the point is the files
        "TEST.PREDICT.SCORE_THRESH",
        "0.0",
        "TEST.DETECTIONS_PER_IMAGE",
        "20",
    ]


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def wait_for_first_image(proc, out, timeout=240):
    deadline = time.monotonic() + timeout
    while not (out / "measurements").is_dir() or not os.listdir(out / "measurements"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------
# One writer per folder
# ------------------------------------------------------------------------------------------
def test_second_predict_into_the_same_folder_is_refused(weights, tmp_path, run_script):
    """Before: both printed "12 image(s) written"; the COCO files listed one run's images."""
    first_in, second_in = image_folder(tmp_path / "a", 12), image_folder(tmp_path / "b", 2)
    out = tmp_path / "out"
    first = subprocess.Popen(
        predict_command(weights, first_in, out),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    wait_for_first_image(first, out)
    first.send_signal(signal.SIGSTOP)  # paused in the middle of its run, lock held
    try:
        start = time.monotonic()
        second = run_script(
            *predict_command(weights, second_in, out, "--overwrite")[1:], timeout=300
        )
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert lines(second.stderr) == [
        f"error: --output {out} is in use by another run writing into it at this moment: "
        "wait for it to finish, or choose another folder"
    ]
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    listed = json.loads((out / "coco_images.json").read_text())["images"]
    assert sorted(os.path.basename(i["file_name"]) for i in listed) == sorted(os.listdir(first_in))
    assert sorted(os.listdir(out / "labels")) == sorted(os.listdir(first_in))
    # refused before any work: no model built (the first run's weights and images untouched)
    assert time.monotonic() - start < 60


def _hold_lock(folder):
    """A process (not this one) that holds ``folder``'s lock until killed."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from maskrcnnpp.utils.folder_lock import exclusive_folder\n"
            "with exclusive_folder(sys.argv[1]):\n print('locked', flush=True); time.sleep(600)",
            str(folder),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


# both conversions share the lock (data/prepared.py's run_locked); the DSB2018 one under -m slow
@pytest.mark.parametrize("tool", ["label_folder", pytest.param("dsb2018", marks=pytest.mark.slow)])
def test_second_dataset_conversion_into_the_same_folder_is_refused(tool, tmp_path, run_script):
    """Before: two conversions into one folder both ran (the last writer won)."""
    out = tmp_path / "prepared"
    if tool == "label_folder":
        write_example_label_folder(str(tmp_path / "example"), num_images=3, size=64)
        args = [
            "datasets/prepare_label_folder.py",
            "--images",
            tmp_path / "example" / "images",
            "--labels",
            tmp_path / "example" / "masks",
            "--out",
            out,
            "--workers",
            "1",
        ]
    else:
        (tmp_path / "kaggle" / "stage1_train").mkdir(parents=True)
        args = [
            "datasets/prepare_dsb2018.py",
            "--root",
            tmp_path / "kaggle",
            "--out",
            out,
            "--workers",
            "1",
        ]
    holder = _hold_lock(out)
    try:
        proc = run_script(*args)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    assert lines(proc.stderr) == [
        f"error: --out {out} is in use by another run writing into it at this moment: "
        "wait for it to finish, or choose another folder"
    ]
    assert os.listdir(out) == []
    if tool == "label_folder":  # the killed holder's lock died with it
        proc = run_script(*args)
        assert proc.returncode == 0, proc.stderr
        assert (out / "annotations" / "instances_train.json").is_file()


def test_folder_lock_is_per_folder_and_leaves_nothing(tmp_path):
    with exclusive_folder(str(tmp_path / "one")):
        with exclusive_folder(str(tmp_path / "two")):  # another folder: no conflict
            pass
        with pytest.raises(FolderInUseError):  # also within one process (a second open)
            with exclusive_folder(str(tmp_path / "one")):
                pass
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from maskrcnnpp.utils.folder_lock import exclusive_folder\n"
                "with exclusive_folder(sys.argv[1], '--out'): pass",
                str(tmp_path / "one"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=ENV,
        )
        assert holder.returncode == 1 and "FolderInUseError: --out" in holder.stderr
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()  # created empty
    (tmp_path / "kept").mkdir()
    with exclusive_folder(str(tmp_path / "kept")):
        pass
    assert (tmp_path / "kept").is_dir()  # not created by the lock: left


# ------------------------------------------------------------------------------------------
# A full disk, and --resume
# ------------------------------------------------------------------------------------------
def coco_files(out):
    """The two COCO files of a run, as parsed JSON."""
    return (
        json.loads((out / "coco_images.json").read_text()),
        json.loads((out / "coco_instances_results.json").read_text()),
    )


def run_files(out):
    return sorted(
        os.path.relpath(os.path.join(root, name), out)
        for root, _, names in os.walk(out)
        for name in names
    )


@pytest.fixture
def in_process_run(weights, monkeypatch):
    """``run(inputs, out, **options)``: predict_to_folder in this process with one thread
    (the runs a test compares then agree bit for bit)."""
    from maskrcnnpp.inference.prediction_run import predict_to_folder

    cfg = setup_cfg(
        RCNN_CONFIG,
        [
            *CPU,
            "MODEL.WEIGHTS",
            weights,
            "TEST.PREDICT.SCORE_THRESH",
            "0.0",
            "TEST.DETECTIONS_PER_IMAGE",
            "20",
        ],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda inputs, out, **options: predict_to_folder(cfg, [str(inputs)], str(out), **options)
    torch.set_num_threads(threads)


def fill_the_disk(monkeypatch, *, after_writes, coco_too):
    """From write ``after_writes + 1`` of a PNG on, every PNG write (and with ``coco_too``
    every atomic write, the COCO files') raises ENOSPC, as on a full disk."""
    import maskrcnnpp.inference.prediction_writer as writer_module

    calls = {"png": 0}
    real_png, real_open = writer_module.atomic_write_png, writer_module.atomic_open

    def full():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def png(path, image):
        calls["png"] += 1
        if calls["png"] > after_writes:
            raise full()
        return real_png(path, image)

    def atomic_open(path, mode="wb"):
        if coco_too and calls["png"] > after_writes:
            raise full()
        return real_open(path, mode)

    monkeypatch.setattr(writer_module, "atomic_write_png", png)
    monkeypatch.setattr(writer_module, "atomic_open", atomic_open)


@pytest.mark.parametrize("coco_too", [False, True])
def test_full_disk_stops_at_the_first_failed_write_and_resume_finishes(
    coco_too, in_process_run, monkeypatch, tmp_path, capsys
):
    """Before: inference went on for every image ("skipped ... No space left"), the label
    PNGs of the images reported as skipped stayed, writer.close ended in a traceback and no
    COCO file was written."""
    from maskrcnnpp.inference.predictor import NucleiPredictor

    inputs = image_folder(tmp_path / "in", 5, size=96)
    reference = tmp_path / "reference"
    assert in_process_run(inputs, reference) == 0
    capsys.readouterr()

    predicted = []
    real_call = NucleiPredictor.__call__
    monkeypatch.setattr(
        NucleiPredictor,
        "__call__",
        lambda self, image: predicted.append(1) or real_call(self, image),
    )
    # the label PNG of image 3 fits, its overlay does not
    fill_the_disk(monkeypatch, after_writes=5, coco_too=coco_too)
    out = tmp_path / "out"
    assert in_process_run(inputs, out) == 1
    # the test's random model fills the detection caps (named warnings): the errors are the rest
    errors = [line for line in lines(capsys.readouterr().err) if "reached the cap" not in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"error: stopped at {inputs / 'im02.png'}: cannot write into {out} "
    )
    assert "No space left on device" in errors[0] and "--resume" in errors[0]
    assert len(predicted) == 3  # stopped at the failed write, no inference after it
    finished = ["im00", "im01"]
    for kind, ext in (("labels", "png"), ("overlays", "png"), ("measurements", "csv")):
        assert sorted(os.listdir(out / kind)) == [f"{n}.{ext}" for n in finished]  # im02's removed
    if coco_too:
        assert "the COCO files could not be written" in errors[0]
        assert not (out / "coco_images.json").exists()
        assert ".predict_progress.jsonl" in os.listdir(out)  # the record --resume reads
    else:
        images, results = coco_files(out)
        assert [i["output_name"] for i in images["images"]] == finished
        assert {r["image_id"] for r in results} == {1, 2}
        assert not [n for n in run_files(out) if os.path.basename(n).startswith(".")]

    monkeypatch.undo()  # space freed
    torch.set_num_threads(1)
    assert in_process_run(inputs, out, resume=True) == 0
    captured = capsys.readouterr()
    assert "resuming: 2 of 5 image(s) finished already" in captured.err
    assert coco_files(out) == coco_files(reference)
    assert run_files(out) == run_files(reference)


@pytest.mark.parametrize(
    "signum",
    # Ctrl-C keeps the finished images too (tests/inference/test_reliability.py); here under -m slow
    [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGKILL],
)
def test_stopped_run_resumed_equals_an_uninterrupted_run(signum, weights, tmp_path, run_script):
    """Before: no --resume; a killed run (SIGKILL) left no COCO file at all."""
    inputs = image_folder(tmp_path / "in", 8, size=96)
    reference, out = tmp_path / "reference", tmp_path / "out"
    proc = run_script(*predict_command(weights, inputs, reference)[1:])
    assert proc.returncode == 0, proc.stderr
    stopped = subprocess.Popen(
        predict_command(weights, inputs, out),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    wait_for_first_image(stopped, out)
    stopped.send_signal(signal.SIGSTOP)  # stopped after one image or more, before the last
    done = len(os.listdir(out / "measurements"))
    stopped.send_signal(signum)
    stopped.send_signal(signal.SIGCONT)
    stopped.communicate(timeout=120)
    assert stopped.returncode in (130, -signal.SIGKILL)
    assert 1 <= done < 8

    proc = run_script(*predict_command(weights, inputs, out, "--resume")[1:])
    assert proc.returncode == 0, proc.stderr
    finished = int(proc.stderr.split("resuming: ")[1].split(" of 8")[0])
    # an image whose files were written but not yet recorded when the signal came is done again
    assert finished >= done - 1
    assert (
        "8 image(s)" in proc.stdout
        and f"({finished} image(s) finished by the stopped run, kept)" in proc.stdout
    )
    assert coco_files(out) == coco_files(reference)
    assert run_files(out) == run_files(reference)  # no temporary, no progress file left
