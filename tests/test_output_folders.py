"""
The output folders of the writing tools (issue 32): one writer per folder at a time (a
second run refused in one line, exit status 2, before any work), a full disk stops a
prediction run at the first failed write keeping what finished whole, and ``predict
--resume`` finishes a stopped run. Two real processes in each concurrency test.
"""
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

from maskrcnnpp.data.label_folder import write_example_label_folder
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image
from maskrcnnpp.engine import setup_cfg
from maskrcnnpp.utils.folder_lock import FolderInUseError, exclusive_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
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
        sys.executable, str(REPO / "tools" / "predict.py"), "--config-file", RCNN_CONFIG,
        "--input", str(inputs), "--output", str(out), *extra, *CPU, "MODEL.WEIGHTS", weights,
        # every detection kept: random weights, and the point is the files
        "TEST.PREDICT.SCORE_THRESH", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20",
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
def test_second_predict_into_the_same_folder_is_refused(weights, tmp_path):
    """Before: both printed "12 image(s) written"; the COCO files listed one run's images."""
    first_in, second_in = image_folder(tmp_path / "a", 12), image_folder(tmp_path / "b", 2)
    out = tmp_path / "out"
    first = subprocess.Popen(
        predict_command(weights, first_in, out), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=ENV,
    )
    wait_for_first_image(first, out)
    first.send_signal(signal.SIGSTOP)  # paused in the middle of its run, lock held
    try:
        start = time.monotonic()
        second = subprocess.run(
            predict_command(weights, second_in, out, "--overwrite"), cwd=REPO,
            capture_output=True, text=True, env=ENV, timeout=300,
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
        [sys.executable, "-c",
         "import sys, time; from maskrcnnpp.utils.folder_lock import exclusive_folder\n"
         "with exclusive_folder(sys.argv[1]):\n print('locked', flush=True); time.sleep(600)",
         str(folder)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=ENV,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("tool", ["label_folder", "dsb2018"])
def test_second_dataset_conversion_into_the_same_folder_is_refused(tool, tmp_path, run_script):
    """Before: two conversions into one folder both ran (the last writer won)."""
    out = tmp_path / "prepared"
    if tool == "label_folder":
        write_example_label_folder(str(tmp_path / "example"), num_images=3, size=64)
        args = ["datasets/prepare_label_folder.py", "--images", tmp_path / "example" / "images",
                "--labels", tmp_path / "example" / "masks", "--out", out, "--workers", "1"]
    else:
        (tmp_path / "kaggle" / "stage1_train").mkdir(parents=True)
        args = ["datasets/prepare_dsb2018.py", "--root", tmp_path / "kaggle", "--out", out,
                "--workers", "1"]
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
            [sys.executable, "-c",
             "import sys; from maskrcnnpp.utils.folder_lock import exclusive_folder\n"
             "with exclusive_folder(sys.argv[1], '--out'): pass", str(tmp_path / "one")],
            cwd=REPO, capture_output=True, text=True, env=ENV,
        )
        assert holder.returncode == 1 and "FolderInUseError: --out" in holder.stderr
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()  # created empty
    (tmp_path / "kept").mkdir()
    with exclusive_folder(str(tmp_path / "kept")):
        pass
    assert (tmp_path / "kept").is_dir()  # not created by the lock: left
