"""
Instance models (Mask R-CNN, Mask R-CNN++) under ``TEST.PRECISION bfloat16`` (issue 32
item 1). Each test failed on the code before its fix (the commit says how).
"""

import json
import pathlib

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image

REPO = pathlib.Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "quick"
CPU = ["MODEL.DEVICE", "cpu"]


def quick_model(config, *opts):
    """The quick config's model with seeded random weights, in eval mode, and its config."""
    cfg = setup_cfg(str(QUICK / config), [*CPU, *opts])
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


# ------------------------------------------------------------------------------------------
# 1. bfloat16 inference of instance models
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["mask_rcnn_FPN.yaml", "mask_rcnn_NestedFPN.yaml"])
def test_bfloat16_instance_outputs_are_float32_and_close(config):
    """Before: the scores came out in bfloat16 and every consumer's ``.numpy()`` raised
    "Got unsupported ScalarType BFloat16". Random weights: the boxes and scores of the float32
    and bfloat16 forward passes are compared detection by detection (the same proposals in
    the same order for the first ones), which shows the outputs are float32 and close; how
    close a trained model's nuclei stay is measured in docs/benchmark.md."""
    from maskrcnnpp.utils.inference_precision import inference_autocast

    cfg, model = quick_model(config, "TEST.DETECTIONS_PER_IMAGE", "20")
    image = generate_synthetic_nuclei_image(0, image_size=(96, 96))[0]
    inputs = [
        {
            "image": torch.as_tensor(image.transpose(2, 0, 1).astype("float32")),
            "height": 96,
            "width": 96,
        }
    ]
    outputs = {}
    for precision in ("float32", "bfloat16"):
        with torch.no_grad(), inference_autocast(precision, model):
            outputs[precision] = model(inputs)[0]["instances"]
    exact, reduced = outputs["float32"], outputs["bfloat16"]
    assert len(reduced) == len(exact) > 0
    assert (
        reduced.scores.dtype == torch.float32 and reduced.pred_boxes.tensor.dtype == torch.float32
    )
    # bfloat16 keeps 8 bits of mantissa: scores near 0.5 move by about 2**-8
    assert (reduced.scores - exact.scores).abs().max().item() < 0.02
    # outside autocast the model is float32 again (the hook is removed)
    with torch.no_grad():
        assert model(inputs)[0]["instances"].scores.dtype == torch.float32


@pytest.fixture(scope="module")
def rcnn_weights(tmp_path_factory):
    """A checkpoint of the quick Mask R-CNN (random init, saved as training does)."""
    cfg, model = quick_model("mask_rcnn_FPN.yaml")
    path = tmp_path_factory.mktemp("weights") / "rcnn.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return str(path)


def test_predict_with_bfloat16_instance_model(rcnn_weights, tmp_path, run_script):
    """Before: every image was skipped ("TypeError: Got unsupported ScalarType BFloat16"),
    exit 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = generate_synthetic_nuclei_image(3, image_size=(96, 96))[0]
    cv2.imwrite(str(folder / "a.png"), rgb[:, :, ::-1])
    counts = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        proc = run_script(
            "tools/predict.py",
            "--config-file",
            QUICK / "mask_rcnn_FPN.yaml",
            "--input",
            folder,
            "--output",
            out,
            *CPU,
            "MODEL.WEIGHTS",
            rcnn_weights,
            "TEST.DETECTIONS_PER_IMAGE",
            "20",
            "TEST.PREDICT.SCORE_THRESH",
            "0.0",
            "TEST.PRECISION",
            precision,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        labels = cv2.imread(str(out / "labels" / "a.png"), cv2.IMREAD_UNCHANGED)
        counts[precision] = len(np.unique(labels)) - 1
    assert counts["float32"] > 0
    assert abs(counts["bfloat16"] - counts["float32"]) <= 2, counts


def test_train_net_bfloat16_amp_and_evaluation_write_final_metrics(tmp_path, run_script):
    """SOLVER.AMP.ENABLED (bfloat16 training on the CPU) and TEST.PRECISION bfloat16: before,
    the final evaluation crashed in NucleiEvaluator and no final_metrics.json was written."""
    out = tmp_path / "run"
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        QUICK / "mask_rcnn_FPN.yaml",
        "SOLVER.MAX_ITER",
        "1",
        "SOLVER.IMS_PER_BATCH",
        "1",
        "SOLVER.AMP.ENABLED",
        "True",
        "TEST.PRECISION",
        "bfloat16",
        "TEST.DETECTIONS_PER_IMAGE",
        "20",
        "TEST.NUCLEI.SCORE_THRESH",
        "0.0",
        "TEST.NUCLEI.NUM_VIS",
        "0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        out,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((out / "final_metrics.json").read_text())["results"]["nuclei_synth_val"]
    assert final["nuclei"]["num_images"] == 16
    assert 0.0 <= final["nuclei"]["dsb_score"] <= 1.0


# ------------------------------------------------------------------------------------------
# 2. Dense images: the caps follow the image's area, and a reached cap is named
# ------------------------------------------------------------------------------------------
INSTANCE_CONFIGS = sorted(
    str(path.relative_to(REPO / "configs"))
    for path in [
        *QUICK.glob("mask_rcnn*.yaml"),
        *(REPO / "configs" / "DSB2018").rglob("mask_rcnn*.yaml"),
    ]
)
PEAK_STRIDE = 8


class _Intensity(torch.nn.Module):
    """Stand-in backbone: each pyramid level is the mean normalized intensity pooled to the
    level's stride (one channel), plus a tiny ramp that makes every value distinct."""

    def __init__(self, backbone):
        super().__init__()
        self.shapes = backbone.output_shape()
        self.size_divisibility = backbone.size_divisibility
        self.padding_constraints = backbone.padding_constraints

    def output_shape(self):
        return self.shapes

    def forward(self, x):
        gray = x.mean(dim=1, keepdim=True)
        out = {}
        for name, shape in self.shapes.items():
            level = torch.nn.functional.avg_pool2d(gray, shape.stride, ceil_mode=True)
            ramp = torch.arange(level.numel(), dtype=level.dtype).view_as(level) / level.numel()
            out[name] = level + 1e-3 * ramp
        return out


class _PeakObjectness(torch.nn.Module):
    """Stand-in RPN head: one proposal (the square anchor) at each bright local maximum of the
    stride-8 level, no other anchor (-inf, which Detectron2's RPN drops at test time)."""

    def __init__(self, strides, num_anchors, square_anchor):
        super().__init__()
        self.strides, self.num_anchors, self.square_anchor = strides, num_anchors, square_anchor

    def forward(self, features):
        logits, deltas = [], []
        for stride, level in zip(self.strides, features):
            n, _, h, w = level.shape
            objectness = torch.full((n, self.num_anchors, h, w), float("-inf"))
            if stride == PEAK_STRIDE:
                value = level[:, 0]
                # a local maximum at least a sixth covered by a disc (background: about -95)
                peak = (value == torch.nn.functional.max_pool2d(value, 3, 1, 1)) & (value > -60)
                objectness[:, self.square_anchor] = torch.where(peak, 10.0, float("-inf"))
            logits.append(objectness)
            deltas.append(torch.zeros(n, self.num_anchors * 4, h, w))
        return logits, deltas


class _Constant(torch.nn.Module):
    def __init__(self, row):
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x):
        return self.row.expand(len(x), -1)


class _FullBoxMasks(torch.nn.Module):
    def forward(self, features, instances):
        for inst in instances:
            inst.pred_masks = torch.ones(len(inst), 1, 28, 28)
        return instances


def disc_detector(config, *opts):
    """The model of a shipped config (its anchors, RPN and ROI heads with their caps, NMS and
    post-processing) whose networks are stand-ins that find each bright disc exactly once:
    counts then show what the caps keep, not how well a network learned. Returns (cfg, model)."""
    cfg = setup_cfg(str(REPO / "configs" / config), [*CPU, "MODEL.WEIGHTS", "", *opts])
    model = build_model(cfg).eval()
    rpn = model.proposal_generator
    strides = [model.backbone.output_shape()[f].stride for f in rpn.in_features]
    ratios = list(cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0])
    assert PEAK_STRIDE in strides and 1.0 in ratios, config
    model.backbone = _Intensity(model.backbone)
    rpn.rpn_head = _PeakObjectness(strides, rpn.anchor_generator.num_anchors[0], ratios.index(1.0))
    roi = model.roi_heads
    roi.box_head = _Constant([0.0])
    roi.box_predictor.cls_score = _Constant([10.0, -10.0])  # nucleus, background
    roi.box_predictor.bbox_pred = _Constant([0.0] * 4)
    roi.mask_head = _FullBoxMasks()
    return cfg, model


def disc_image(rows, cols, spacing=32, radius=6, margin=12):
    """(H, W, 3) uint8: rows x cols bright discs on a dark background, centres 2 px off the
    stride-8 grid, the last ones at least ``margin`` px from the border."""
    height, width = rows * spacing, cols * spacing
    image = np.full((height, width, 3), 20, np.uint8)
    for r in range(rows):
        for c in range(cols):
            centre = (c * spacing + margin - 2, r * spacing + margin - 2)
            cv2.circle(image, centre, radius, (230, 230, 230), -1)
    return image


def count(config, image, *opts):
    from maskrcnnpp.inference import NucleiPredictor

    cfg, model = disc_detector(config, "TEST.PREDICT.SCORE_THRESH", "0.5", *opts)
    prediction = NucleiPredictor(cfg, model=model)(image)
    return int(prediction.labels.max()), prediction.caps_reached


@pytest.mark.parametrize("config", INSTANCE_CONFIGS)
def test_mosaics_keep_every_nucleus_with_every_shipped_config(config):
    """A 256 x 256 image of 64 discs and its 2x2 and 3x3 mosaics: 64, 256 and 576 nuclei with
    every shipped instance config. Before: the 3x3 mosaic gave 200 (quick configs,
    TEST.DETECTIONS_PER_IMAGE) and nothing said so."""
    one = disc_image(8, 8)
    single, reached = count(config, one)
    assert single == 64 and not reached, (single, reached)
    for k in (2, 3):
        found, reached = count(config, np.tile(one, (k, k, 1)))
        assert abs(found - k * k * single) <= 0.15 * k * k * single, (k, found)
        assert not reached, reached


def test_image_with_more_nuclei_than_any_cap(tmp_path):
    """1,600 nuclei in a 1024 x 1024 image (more than any shipped fixed cap: 200-500
    detections, 500-2000 proposals): all of them with the per-megapixel caps; with the
    per-megapixel rates at 0 (the fixed caps alone, as before) the count stops at the cap and
    the cap is named with its key (before: silently)."""
    dense = disc_image(40, 40, spacing=25, radius=5)
    dense = np.pad(dense, ((0, 24), (0, 24), (0, 0)), constant_values=20)
    assert dense.shape[:2] == (1024, 1024)
    found, reached = count("quick/mask_rcnn_NestedFPN.yaml", dense)
    assert found == 1600 and not reached, (found, reached)
    found, reached = count(
        "quick/mask_rcnn_NestedFPN.yaml",
        dense,
        "TEST.DETECTIONS_PER_MEGAPIXEL",
        "0",
        "MODEL.RPN.POST_NMS_TOPK_TEST_PER_MEGAPIXEL",
        "0",
    )
    assert found == 200
    assert len(reached) == 2, reached
    assert "reached the cap of 500 proposals (MODEL.RPN.POST_NMS_TOPK_TEST 500" in reached[0]
    assert "reached the cap of 200 detections (TEST.DETECTIONS_PER_IMAGE 200" in reached[1]


def test_mask_head_sees_only_the_detections_the_predictor_keeps(monkeypatch):
    """The predictor raises the box predictor's threshold to TEST.PREDICT.SCORE_THRESH while it
    runs the model: the same nuclei and scores as with the evaluation's 0.05, fewer ROIs
    through the mask head and the paste, and the model's threshold back afterwards."""
    import contextlib

    from maskrcnnpp.inference import NucleiPredictor

    cfg = setup_cfg(
        str(REPO / "maskrcnnpp" / "model_zoo" / "configs" / "mask_rcnnpp_nuclei.yaml"),
        [*CPU, "MODEL.WEIGHTS", "maskrcnnpp://mask_rcnnpp_nuclei"],
    )
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST < cfg.TEST.PREDICT.SCORE_THRESH == 0.5
    predictor = NucleiPredictor(cfg)
    rois = []
    predictor.model.roi_heads.mask_head.register_forward_hook(
        lambda module, inputs, output: rois.append(len(inputs[0]))
    )
    image = generate_synthetic_nuclei_image(3, image_size=256)[0]
    kept = predictor(image)
    box_predictor = predictor.model.roi_heads.box_predictor
    assert box_predictor.test_score_thresh == cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    monkeypatch.setattr(
        NucleiPredictor, "_detections_from", lambda self, thresh: contextlib.nullcontext()
    )
    everything = predictor(image)
    assert kept.labels.max() > 10
    assert np.array_equal(kept.labels, everything.labels)
    assert np.array_equal(kept.scores, everything.scores)
    assert rois[0] == kept.labels.max() < rois[1], rois


# ------------------------------------------------------------------------------------------
# 3. No prediction or export with random weights; overrides swallowed by --input
# ------------------------------------------------------------------------------------------
def test_predict_and_export_refuse_random_weights(tmp_path, run_script):
    """Before: predict wrote 58 "nuclei" of the randomly initialised quick model, exit 0 with
    a warning; export exported it."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), generate_synthetic_nuclei_image(0, image_size=(64, 64))[0])
    config = QUICK / "mask_rcnn_FPN.yaml"
    for args in (
        [
            "tools/predict.py",
            "--config-file",
            config,
            "--input",
            image,
            "--output",
            tmp_path / "out",
        ],
        [
            "tools/export_model.py",
            "--config-file",
            config,
            "--format",
            "torchscript",
            "--output",
            tmp_path / "out",
        ],
    ):
        proc = run_script(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and "MODEL.WEIGHTS is empty" in lines[0], lines
        assert not (tmp_path / "out").exists()


def test_predict_refuses_overrides_swallowed_by_input(tmp_path, run_script):
    """``--output DIR --input a.png MODEL.WEIGHTS w.pth``: argparse gives the overrides to
    --input. Before: "skipped MODEL.WEIGHTS: ... looks like a config key", then the run went
    on with random weights, exit 1."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((16, 16), np.uint8))
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        QUICK / "mask_rcnn_FPN.yaml",
        "--output",
        tmp_path / "out",
        "--input",
        image,
        "MODEL.WEIGHTS",
        tmp_path / "w.pth",
    )
    assert proc.returncode == 2
    assert (
        "'MODEL.WEIGHTS' looks like a config key: put KEY VALUE overrides last"
        in proc.stderr.splitlines()[-1]
    )
    assert not (tmp_path / "out").exists()
