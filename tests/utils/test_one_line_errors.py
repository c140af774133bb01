"""
Bad input to the tools gives one line naming the file, key or value at fault and exit status
2 before the work starts, never a traceback (issue 32); Ctrl-C gives one line too. Each case
ended in a traceback (exit status 1) before its fix.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from maskrcnnpp.data.label_folder import prepare_label_folder
from maskrcnnpp.data.synthetic_nuclei import write_example_label_folder

REPO = pathlib.Path(__file__).resolve().parents[2]
QUICK = str(REPO / "configs" / "quick" / "mask_rcnn_NestedFPN.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# a training that stops at once and reads no dataset it is not asked to
SHORT = [
    "SOLVER.MAX_ITER",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "1",
    "SOLVER.WARMUP_ITERS",
    "0",
    "MODEL.DEVICE",
    "cpu",
]


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line(proc, *fragments, status=2):
    """Exit ``status``, no traceback, and one stderr line holding every fragment."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    matching = [line for line in lines(proc.stderr) if all(f in line for f in fragments)]
    assert len(matching) == 1, proc.stderr[-3000:]
    return matching[0]


@pytest.fixture
def image(tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((16, 16), np.uint8))
    return path


def tool_args(tool, config, tmp_path, image):
    if tool == "predict":
        return [
            "tools/predict.py",
            "--config-file",
            config,
            "--input",
            image,
            "--output",
            tmp_path / "o",
        ]
    if tool == "export":
        return [
            "tools/export_model.py",
            "--config-file",
            config,
            "--format",
            "torchscript",
            "--output",
            tmp_path / "o",
        ]
    return ["tools/train_net.py", "--config-file", config]


# ------------------------------------------------------------------------------------------
# --config-file missing or not a config
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tool, fault",
    # every fault through one tool; the other tools share its front door (setup_cfg) and are
    # checked with one fault each
    [
        ("train_net", "missing"),
        ("train_net", "unparsable"),
        ("train_net", "not_a_mapping"),
        ("predict", "unparsable"),
        ("export", "missing"),
    ],
)
def test_bad_config_file_is_one_line(tool, fault, tmp_path, image, run_script):
    """Before: AssertionError "Config file ... does not exist!" / a yaml traceback, exit 1."""
    config = tmp_path / "config.yaml"
    if fault == "unparsable":
        config.write_text("MODEL:\n  WEIGHTS: [unclosed\n")
    elif fault == "not_a_mapping":
        config.write_text("just some words\n")
    proc = run_script(*tool_args(tool, config, tmp_path, image))
    expected = {
        "missing": "config file not found",
        "unparsable": "is not valid YAML",
        "not_a_mapping": "is not a config",
    }[fault]
    assert_one_line(proc, str(config), expected)


# ------------------------------------------------------------------------------------------
# output folders that are files
# ------------------------------------------------------------------------------------------
def test_train_output_dir_that_is_a_file(tmp_path, run_script):
    """Before: FileExistsError traceback from Detectron2's default_setup."""
    (tmp_path / "taken").write_text("a file")
    proc = run_script(
        "tools/train_net.py", "--config-file", QUICK, *SHORT, "OUTPUT_DIR", tmp_path / "taken"
    )
    assert_one_line(proc, f"OUTPUT_DIR {tmp_path / 'taken'} is a file")


def test_export_output_that_is_a_file(tmp_path, run_script):
    """Before: the model was built and exported, then a traceback when writing."""
    (tmp_path / "taken").write_text("a file")
    proc = run_script(
        "tools/export_model.py",
        "--config-file",
        QUICK,
        "--format",
        "torchscript",
        "--output",
        tmp_path / "taken",
        "MODEL.DEVICE",
        "cpu",
    )
    assert_one_line(proc, f"--output {tmp_path / 'taken'} is a file")


# ------------------------------------------------------------------------------------------
# datasets: not prepared, or images moved after preparation
# ------------------------------------------------------------------------------------------
def test_unprepared_label_folder_reported_before_the_model_is_built(tmp_path, run_script):
    """Before: the model was built first, then a FileNotFoundError traceback."""
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        QUICK,
        *SHORT,
        "DATASETS.LABEL_FOLDERS",
        f"['mine={tmp_path / 'never_prepared'}']",
        "DATASETS.TRAIN",
        "('mine_train',)",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        tmp_path / "run",
    )
    assert_one_line(proc, "'mine_train' is not prepared", str(tmp_path / "never_prepared"))
    assert "GeneralizedRCNN" not in proc.stdout  # the model was not built


def test_training_images_moved_after_preparation(tmp_path, run_script):
    """Before: ValueError "Sample larger than population" from Detectron2's MapDataset."""
    write_example_label_folder(str(tmp_path / "example"), num_images=3, size=64)
    prepare_label_folder(
        str(tmp_path / "example" / "images"),
        str(tmp_path / "example" / "masks"),
        str(tmp_path / "prepared"),
        workers=1,
    )
    shutil.move(tmp_path / "example" / "images", tmp_path / "moved")
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        QUICK,
        *SHORT,
        "DATASETS.LABEL_FOLDERS",
        f"['moved={tmp_path / 'prepared'}']",
        "DATASETS.TRAIN",
        "('moved_train',)",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        tmp_path / "run",
    )
    line = assert_one_line(proc, "moved_train", "3 of 3 image file(s)")
    assert str(tmp_path / "example" / "images" / "nuclei_0.png") in line
    assert "GeneralizedRCNN" not in proc.stdout


# ------------------------------------------------------------------------------------------
# tools/compare.py: every argument checked before the first training
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--model", "a=missing.yaml"], ["missing.yaml", "does not exist"]),
        (["--model", "configs/quick/mask_rcnn_FPN.yaml"], ["NAME=CONFIG.yaml"]),
        (["--model", f"a={QUICK}", "--model", f"a={QUICK}"], ["given more than once", "'a'"]),
        (["--model", f"a={QUICK}", "MODEL.NO_SUCH_KEY", "1"], ["MODEL.NO_SUCH_KEY"]),
        (["--model", f"a={QUICK}", "--pair", "a", "b"], ["--pair a b", "'b'"]),
        (["--model", f"a={QUICK}", "--table-only"], ["no finished run"]),
    ],
    ids=[
        "missing_config",
        "not_name_config",
        "duplicate",
        "bad_override",
        "unknown_pair",
        "table_only",
    ],
)
def test_compare_argument_errors_are_one_line_before_training(
    args, fragments, tmp_path, run_script
):
    """Before: tracebacks; an unknown --pair name only after every training had finished."""
    start = time.monotonic()
    proc = run_script("tools/compare.py", "--output-root", tmp_path / "cmp", "--seeds", "0", *args)
    assert_one_line(proc, *fragments)
    assert not (tmp_path / "cmp" / "a" / "seed0").exists()  # no training started
    assert time.monotonic() - start < 120


# ------------------------------------------------------------------------------------------
# Ctrl-C
# ------------------------------------------------------------------------------------------
def interrupt_after(command, ready, timeout=240):
    """Run ``command``, send SIGINT once ``ready()`` holds; returns (returncode, stderr)."""
    # SIGINT as a terminal gives it, even where pytest itself runs with it ignored (`nohup ... &`)
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_ctrl_c_of_train_net_is_one_line(tmp_path):
    """Before: a KeyboardInterrupt traceback of some 40 lines (exit status -SIGINT kept)."""
    run = tmp_path / "run"
    status, stderr = interrupt_after(
        [
            sys.executable,
            str(REPO / "tools" / "train_net.py"),
            "--config-file",
            QUICK,
            *SHORT,
            "SOLVER.MAX_ITER",
            "100000",
            "SOLVER.CHECKPOINT_PERIOD",
            "100000",
            "OUTPUT_DIR",
            str(run),
        ],
        lambda: (run / "metrics.json").is_file() or (run / "log.txt").is_file(),
    )
    assert status == -signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert lines(stderr)[-1].startswith("train_net: interrupted by SIGINT"), stderr[-3000:]


def test_ctrl_c_of_prepare_label_folder_is_one_line(tmp_path):
    """Before: tracebacks of the main process and of every worker (exit status -SIGINT kept)."""
    write_example_label_folder(str(tmp_path / "example"), num_images=100, size=64)
    # 10,000 pairs (hard links of the 100), so that a fast machine is still reading when the
    # signal comes: 400 pairs were read in 0.4 s, and the signal arrived at the exit
    for folder, suffix in (("images", ".png"), ("masks", ".tif")):
        folder = tmp_path / "example" / folder
        for k in range(100):
            for copy in range(1, 100):
                os.link(folder / f"nuclei_{k}{suffix}", folder / f"copy{copy}_nuclei_{k}{suffix}")
    status, stderr = interrupt_after(
        [
            sys.executable,
            str(REPO / "datasets" / "prepare_label_folder.py"),
            "--images",
            str(tmp_path / "example" / "images"),
            "--labels",
            str(tmp_path / "example" / "masks"),
            "--out",
            str(tmp_path / "prepared"),
            "--workers",
            "2",
        ],
        lambda: (tmp_path / "prepared").is_dir(),
    )
    assert status == -signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert lines(stderr)[-1].startswith("prepare_label_folder: interrupted by SIGINT"), stderr[
        -3000:
    ]
