"""
Reliability of the tools (issue 13): no silent wrong answers, nothing lost on an interrupt,
bad output folders refused before the work, one-line errors, known third-party warnings
filtered. Each test failed on the code before its fix (the commit says how).
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from maskrcnnpp.checkpoint.checkpointer import AtomicDetectionCheckpointer, WeightsError
from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image

REPO = pathlib.Path(__file__).resolve().parents[2]
RCNN_CONFIG = str(REPO / "configs" / "quick" / "mask_rcnn_NestedFPN.yaml")
UNETPP_CONFIG = str(REPO / "configs" / "quick" / "unetpp_vgg.yaml")
CPU = ["MODEL.DEVICE", "cpu"]
# Small test-time inputs (96 px images, INPUT.SCALE_FACTOR_TEST 1 of the quick config) keep the
# Mask R-CNN++ runs to a fraction of a second per image.
SMALL_RCNN = ["TEST.DETECTIONS_PER_IMAGE", "20"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Checkpoints of the quick Mask R-CNN++ and UNet++ (random init, saved as training does)."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    torch.manual_seed(0)
    for name, config in (("rcnn", RCNN_CONFIG), ("unetpp", UNETPP_CONFIG)):
        model = build_model(setup_cfg(config, CPU))
        paths[name] = str(folder / f"{name}.pth")
        torch.save({"model": model.state_dict(), "iteration": 0}, paths[name])
    return paths


@pytest.fixture
def images(tmp_path):
    """A folder of three small synthetic nuclei images."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        rgb = generate_synthetic_nuclei_image(seed, image_size=(96, 96))[0]
        cv2.imwrite(str(folder / f"img{seed}.png"), rgb[:, :, ::-1])
    return folder


def error_lines(stderr):
    """The lines of stderr but the detection-cap warnings, which the random-weight test models
    (proposals and detections everywhere) raise on every image."""
    return [line for line in stderr.splitlines() if line.strip() and "reached the cap" not in line]


# ------------------------------------------------------------------------------------------
# 1. Weights of another architecture
# ------------------------------------------------------------------------------------------
def test_predict_refuses_weights_of_another_architecture(weights, images, tmp_path, run_script):
    """Before: exit 0, 30 'nuclei' from a randomly initialised UNet++ and 180 lines of
    missing-key warnings."""
    out = tmp_path / "out"
    common = ["--input", str(images), "--output", str(out)]
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        UNETPP_CONFIG,
        *common,
        *CPU,
        "MODEL.WEIGHTS",
        weights["rcnn"],
    )
    status, lines = proc.returncode, error_lines(proc.stderr)
    assert status == 2
    assert len(lines) == 1, lines
    assert weights["rcnn"] in lines[0] and "matches none of the model's 178 weights" in lines[0]
    assert "encoder.vgg0.conv1.weight" in lines[0]
    assert not out.exists()
    # A partial match (the detector's own checkpoint without its ROI heads): how many matched,
    # and a few missing names.
    checkpoint = torch.load(weights["rcnn"], weights_only=False)
    kept = {k: v for k, v in checkpoint["model"].items() if not k.startswith("roi_heads.")}
    partial = tmp_path / "partial.pth"
    torch.save({"model": kept, "iteration": 0}, partial)
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        RCNN_CONFIG,
        *common,
        *CPU,
        "MODEL.WEIGHTS",
        str(partial),
    )
    status, lines = proc.returncode, error_lines(proc.stderr)
    assert status == 2 and len(lines) == 1, lines
    match = re.search(
        rf"{re.escape(str(partial))} holds (\d+) of the model's (\d+) weights; missing (\d+), e.g. roi_heads\.",
        lines[0],
    )
    assert match, lines[0]
    held, total, missing = map(int, match.groups())
    assert held > 0 and missing > 0 and held + missing == total
    assert not out.exists()


def test_export_refuses_weights_of_another_architecture(weights, tmp_path, run_script):
    """Before: the export was written from a random model, export_info.json naming the file."""
    out = tmp_path / "export"
    proc = run_script(
        "tools/export_model.py",
        "--config-file",
        UNETPP_CONFIG,
        "--format",
        "torchscript",
        "--output",
        str(out),
        *CPU,
        "MODEL.WEIGHTS",
        weights["rcnn"],
    )
    assert proc.returncode == 2
    err = proc.stderr
    assert f"{weights['rcnn']} matches none of the model's" in err
    assert not out.exists()


def test_eval_only_refuses_weights_of_another_architecture(weights, tmp_path, run_script):
    """Before: --eval-only evaluated the randomly initialised model and reported its metrics."""
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        UNETPP_CONFIG,
        "--eval-only",
        *CPU,
        "MODEL.WEIGHTS",
        weights["rcnn"],
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc.stderr)[-1].startswith(
        f"train_net: error: {weights['rcnn']} matches none"
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "eval" / "inference").exists()


def test_training_init_refuses_a_checkpoint_matching_no_weight(tmp_path):
    """Partial initialisation stays allowed; a checkpoint that matches nothing is an error
    (before: it was loaded, with a warning, and training started from scratch)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    partial = tmp_path / "partial.pth"
    torch.save({"model": {"0.weight": torch.ones(4, 3), "0.bias": torch.ones(4)}}, partial)
    AtomicDetectionCheckpointer(model).load(str(partial))
    assert torch.equal(model[0].weight, torch.ones(4, 3))
    other = tmp_path / "other.pth"
    torch.save({"model": nn.Conv2d(1, 1, 1).state_dict()}, other)
    with pytest.raises(
        WeightsError, match=r"other\.pth matches none of the model's 4 weights \(e\.g\. 0\.weight"
    ):
        AtomicDetectionCheckpointer(model).load(str(other))
    with pytest.raises(
        WeightsError,
        match=r"partial\.pth holds 2 of the model's 4 weights; missing 2, e\.g\. 1\.weight, 1\.bias",
    ):
        AtomicDetectionCheckpointer(model, require_all_weights=True).load(str(partial))
    with pytest.raises(WeightsError, match="MODEL.WEIGHTS is empty"):
        AtomicDetectionCheckpointer(model, require_all_weights=True).load("")


# ------------------------------------------------------------------------------------------
# 10. Not a checkpoint
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["text", "random", "tensor"])
def test_not_a_checkpoint_is_one_line(kind, images, tmp_path, run_script):
    """Before: 'KeyError: 101', a many-line torch.load message, or a traceback."""
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("hello, this is not a model\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        torch.save([torch.zeros(3)], path)
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        UNETPP_CONFIG,
        "--input",
        str(images),
        "--output",
        str(tmp_path / "out"),
        *CPU,
        "MODEL.WEIGHTS",
        str(path),
    )
    lines = error_lines(proc.stderr)
    assert proc.returncode == 2
    assert len(lines) == 1, lines
    assert f"not a PyTorch or Detectron2 checkpoint: {path}" in lines[0]


# ------------------------------------------------------------------------------------------
# 11. Config errors
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["SOLVER.IMS_PER_BATCH", "0"],
            "SOLVER.IMS_PER_BATCH = 0 (set on the command line) must be an integer >= 1",
        ),
        (
            ["SOLVER.BASE_LR", "-0.1"],
            "SOLVER.BASE_LR = -0.1 (set on the command line) must be a finite number >= 0",
        ),
        (["SOLVER.BASE_LRR", "0.1"], "Non-existent key: SOLVER.BASE_LRR"),
        (["SOLVER.BASE_LR", "fast"], "values (0.02 vs. fast) for config key: SOLVER.BASE_LR"),
    ],
)
def test_train_net_config_error_is_one_line_exit_2(overrides, expected, run_script):
    """Before: a traceback, then the message, exit status 1."""
    proc = run_script("tools/train_net.py", "--config-file", RCNN_CONFIG, *overrides)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("train_net: error: ") and expected in lines[0], (
        lines
    )


def test_config_value_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{RCNN_CONFIG}"\nSOLVER:\n  IMS_PER_BATCH: 0\n')
    with pytest.raises(
        ValueError, match=rf"SOLVER\.IMS_PER_BATCH = 0 \(set in {bad} or its _BASE_\)"
    ):
        setup_cfg(str(bad))


def test_train_net_traceback_on_request(tmp_path, run_script):
    bad = tmp_path / "typo.yaml"
    bad.write_text(f'_BASE_: "{RCNN_CONFIG}"\nSOLVER:\n  BASE_LRR: 0.1\n')
    plain = run_script("tools/train_net.py", "--config-file", str(bad), timeout=300)
    assert plain.returncode == 2
    assert error_lines(plain.stderr) == [
        f"train_net: error: {bad} (or one of its _BASE_ files): Non-existent config key: SOLVER.BASE_LRR"
    ]
    verbose = run_script(
        "tools/train_net.py",
        "--config-file",
        str(bad),
        env={"MASKRCNNPP_TRACEBACK": "1"},
        timeout=300,
    )
    assert verbose.returncode == 2 and "Traceback (most recent call last)" in verbose.stderr


# ------------------------------------------------------------------------------------------
# 12. Known third-party warnings
# ------------------------------------------------------------------------------------------
def test_predict_run_prints_no_warning(weights, images, tmp_path, run_script):
    """Before: torch.jit.script FutureWarnings (twice), the torch.meshgrid UserWarning and
    torch's is_fx_tracing notice on every run."""
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        RCNN_CONFIG,
        "--input",
        str(images),
        "--output",
        str(tmp_path / "out"),
        *CPU,
        *SMALL_RCNN,
        "MODEL.WEIGHTS",
        weights["rcnn"],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [], proc.stderr[-3000:]
    assert "3 image(s)" in proc.stdout


def test_a_real_warning_is_still_seen():
    import warnings

    from maskrcnnpp.utils.known_warnings import filter_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_known_warnings(logs=False)
        warnings.warn("something the user must see", UserWarning)
        torch.meshgrid(torch.arange(2), torch.arange(2))  # the known one: filtered
    assert [str(w.message) for w in caught] == ["something the user must see"]


# ------------------------------------------------------------------------------------------
# 9. Output folder a file / not writable: refused before any image is predicted
# ------------------------------------------------------------------------------------------
# Weights that do not exist: building the model would fail with "MODEL.WEIGHTS: no such file",
# so an error about the output folder says that the folder was checked before the model.
NEVER_LOADED = ["MODEL.WEIGHTS", str(REPO / "no_such_weights_never_loaded.pth")]


@pytest.mark.parametrize("fault", ["file", "read_only", "under_a_file"])
def test_bad_output_folder_refused_before_the_work(fault, images, tmp_path, run_script):
    """Before: every image was predicted, each then 'skipped', then a FileExistsError traceback."""
    out = tmp_path / "out"
    if fault == "file":
        out.write_text("not a folder")
        expected = f"error: --output {out} is a file, not a folder"
    elif fault == "read_only":
        out.mkdir()
        out.chmod(0o555)
        expected = f"error: --output {out} is not writable"
    else:
        (tmp_path / "blocker").write_text("x")
        out = tmp_path / "blocker" / "out"
        expected = f"error: --output {out} cannot be created: {tmp_path / 'blocker'} is a file"
    try:
        proc = run_script(
            "tools/predict.py",
            "--config-file",
            RCNN_CONFIG,
            "--input",
            str(images),
            "--output",
            str(out),
            *CPU,
            *NEVER_LOADED,
        )
    finally:
        if fault == "read_only":
            out.chmod(0o755)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


# ------------------------------------------------------------------------------------------
# 7. Reusing an output folder
# ------------------------------------------------------------------------------------------
def test_reused_output_folder_refused_unless_overwrite(weights, images, tmp_path, run_script):
    """Before: the second run wrote beside the first; the first run's label, overlay and CSV
    files stayed next to COCO files listing only the second run's images."""
    out = tmp_path / "out"
    run = ["--config-file", RCNN_CONFIG, "--output", str(out), *CPU, *SMALL_RCNN]
    proc = run_script("tools/predict.py", "--input", images, *run, "MODEL.WEIGHTS", weights["rcnn"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out / "labels")) == ["img0.png", "img1.png", "img2.png"]
    (out / "notes.txt").write_text("the user's own file")

    second = tmp_path / "second"
    second.mkdir()
    cv2.imwrite(str(second / "other.png"), cv2.imread(str(images / "img0.png")))
    refused = run_script("tools/predict.py", "--input", second, *run, *NEVER_LOADED)
    lines = error_lines(refused.stderr)
    assert refused.returncode == 2 and len(lines) == 1
    assert f"--output {out} is not empty" in lines[0] and "--overwrite" in lines[0]
    assert sorted(os.listdir(out / "labels")) == ["img0.png", "img1.png", "img2.png"]  # untouched

    proc = run_script(
        "tools/predict.py", "--input", second, "--overwrite", *run, "MODEL.WEIGHTS", weights["rcnn"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for kind, extension in (("labels", "png"), ("overlays", "png"), ("measurements", "csv")):
        assert os.listdir(out / kind) == [f"other.{extension}"]
    listed = json.loads((out / "coco_images.json").read_text())["images"]
    assert [os.path.basename(i["file_name"]) for i in listed] == ["other.png"]
    assert (out / "notes.txt").read_text() == "the user's own file"  # not the tool's: kept


# ------------------------------------------------------------------------------------------
# 6. SIGINT / SIGTERM in the middle of a run
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_predict_keeps_the_finished_images(signum, status, weights, tmp_path):
    """Before: 8 of 20 images' files, no COCO files at all, a KeyboardInterrupt traceback."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(12):
        rgb = generate_synthetic_nuclei_image(seed, image_size=(128, 128))[0]
        cv2.imwrite(str(folder / f"im{seed:02d}.png"), rgb[:, :, ::-1])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tools" / "predict.py"),
            "--config-file",
            RCNN_CONFIG,
            "--input",
            str(folder),
            "--output",
            str(out),
            *CPU,
            "MODEL.WEIGHTS",
            weights["rcnn"],
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 240
    while not (out / "labels").is_dir() or not os.listdir(out / "labels"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(
        f"interrupted by {signal.Signals(signum).name}: "
    ), stderr
    done = sorted(os.path.splitext(n)[0] for n in os.listdir(out / "labels"))
    assert 1 <= len(done) < 12
    assert f"{len(done)} of 12 image(s) done" in lines[0]
    for kind in ("overlays", "measurements"):
        assert sorted(os.path.splitext(n)[0] for n in os.listdir(out / kind)) == done
    images = json.loads((out / "coco_images.json").read_text())["images"]
    assert sorted(os.path.splitext(os.path.basename(i["file_name"]))[0] for i in images) == done
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert {r["image_id"] for r in results} <= {i["id"] for i in images}
    assert not [n for _, _, files in os.walk(out) for n in files if n.startswith(".")]


# ------------------------------------------------------------------------------------------
# 5. Multi-image TIFF: refused, named, never read as its first image
# ------------------------------------------------------------------------------------------
def test_multi_page_tiff_is_refused_clearly(images, weights, tmp_path, run_script):
    """Before: only page 1 was predicted, silently."""
    import tifffile

    from maskrcnnpp.data.image_io import ImageReadError, read_image_rgb

    stack = tmp_path / "stack.tif"
    with tifffile.TiffWriter(str(stack)) as tif:
        for value in (10, 200, 90):
            tif.write(np.full((40, 50), value, np.uint8))
    with pytest.raises(
        ImageReadError,
        match=r"multi-image TIFF \(3 separate images\): only single-image files are read",
    ):
        read_image_rgb(stack)
    # predict names it among the skipped inputs (exit 1) and predicts the others
    out = tmp_path / "out"
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        RCNN_CONFIG,
        "--input",
        stack,
        images / "img0.png",
        "--output",
        out,
        *CPU,
        *SMALL_RCNN,
        "MODEL.WEIGHTS",
        weights["rcnn"],
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"skipped {stack}: multi-image TIFF (3 separate images)" in proc.stderr
    assert os.listdir(out / "labels") == ["img0.png"]


# ------------------------------------------------------------------------------------------
# 3. Tiling and image size do not change the nuclei's pixel scale
# ------------------------------------------------------------------------------------------
DISC_RADIUS = 8


class ScaleSensitiveModel(nn.Module):
    """Finds bright discs only at the pixel scale it was 'trained' on: a component of the model
    input counts when its area is within 0.6x..1.6x that of a disc of DISC_RADIUS * scale, as a
    real detector misses nuclei far smaller or larger than its training ones. Returns instances
    (masks pasted back at the requested height x width) or a 2-class sem_seg."""

    def __init__(self, trained_scale, semantic=False):
        super().__init__()
        self.area = np.pi * (DISC_RADIUS * trained_scale) ** 2
        self.semantic = semantic

    def forward(self, batched_inputs):
        from detectron2.structures import Boxes, Instances

        outputs = []
        for item in batched_inputs:
            image = item["image"].numpy().transpose(1, 2, 0)
            count, components, stats, _ = cv2.connectedComponentsWithStats(
                (image[:, :, 0] > 127).astype(np.uint8)
            )
            keep = [
                k
                for k in range(1, count)
                if 0.6 * self.area <= stats[k, cv2.CC_STAT_AREA] <= 1.6 * self.area
            ]
            size = (item["width"], item["height"])
            masks = [
                cv2.resize(
                    (components == k).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST
                )
                > 0
                for k in keep
            ]
            if self.semantic:
                nucleus = np.any(masks, axis=0) if masks else np.zeros(size[::-1], bool)
                prob = torch.from_numpy(np.where(nucleus, 0.9, 0.05).astype(np.float32))
                outputs.append({"sem_seg": torch.stack([1 - prob, prob])})
                continue
            instances = Instances(size[::-1])
            instances.pred_masks = torch.from_numpy(np.array(masks, bool).reshape(-1, *size[::-1]))
            instances.scores = torch.full((len(masks),), 0.9)
            instances.pred_boxes = Boxes(torch.zeros(len(masks), 4))
            outputs.append({"instances": instances})
        return outputs


def disc_grid_image(side=256, spacing=32):
    image = np.zeros((side, side, 3), np.uint8)
    for y in range(spacing // 2, side, spacing):
        for x in range(spacing // 2, side, spacing):
            cv2.circle(image, (x, y), DISC_RADIUS, (255, 255, 255), -1)
    return image


@pytest.mark.parametrize(
    "config,overrides",
    [
        (RCNN_CONFIG, []),  # quick config: SCALE_FACTOR_TEST 1, the 768 mosaic predicted whole
        (RCNN_CONFIG, ["TEST.PREDICT.MAX_UNTILED_SIZE", "600"]),  # ... in 512 tiles
        (RCNN_CONFIG, ["INPUT.SCALE_FACTOR_TEST", "2.0"]),  # upscaled 2x
        (UNETPP_CONFIG, ["TEST.PREDICT.MAX_UNTILED_SIZE", "600"]),
    ],
)
def test_mosaic_of_an_image_has_k_squared_times_its_nuclei(config, overrides):
    """Before: the single 256 image went through the test resize at 1x, the 768 mosaic (or
    its 512 tiles) at 1/3 (1/2): nuclei shrank below what the model finds (the issue's 6x6
    mosaic kept 32 % of them)."""
    from maskrcnnpp.inference import NucleiPredictor

    cfg = setup_cfg(config, CPU + overrides)
    semantic = config == UNETPP_CONFIG
    trained_scale = 1.0 if semantic else cfg.INPUT.SCALE_FACTOR_TEST
    predictor = NucleiPredictor(cfg, model=ScaleSensitiveModel(trained_scale, semantic))
    single = disc_grid_image()
    mosaic = np.tile(single, (3, 3, 1))
    one = int(predictor(single).labels.max())
    assert one == 64
    prediction = predictor(mosaic)
    if "600" in overrides:
        assert prediction.num_tiles == 4
    assert abs(int(prediction.labels.max()) - 9 * one) <= 0.05 * 9 * one
