"""
tools/export_model.py and maskrcnnpp/export: TorchScript and ONNX round trips of Mask R-CNN++
and the semantic UNet++ (random weights, small synthetic images), each export reloaded from
the file it wrote and compared with the eager model on an image it was not traced on; the
output check itself on hand-made outputs; nothing written when the check or the export fails.
"""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image
from maskrcnnpp.export import (
    EXPORT_INFO_FILE,
    ExportMismatchError,
    OutputTolerance,
    check_exported_outputs,
    export_model,
)
from maskrcnnpp.export.onnx_export import OnnxExportError, export_onnx_bytes
from maskrcnnpp.export.sample_inputs import image_to_model_input
from maskrcnnpp.export.traceable_model import (
    build_traceable_model,
    flattened_output_names,
    run_eager,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK_RCNNPP = os.path.join(REPO, "configs", "quick", "mask_rcnn_NestedFPN.yaml")
# Small inputs (120 x 120 and 120 x 160 images at the test factor 0.8: 96 x 96, 96 x 128), a
# narrow neck and heads and fewer proposals keep the runs to seconds.
SMALL_RCNN = [
    "INPUT.SCALE_FACTOR_TEST", "0.8",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "TEST.DETECTIONS_PER_IMAGE", "50",
]  # fmt: skip
RCNN_NAMES = [
    "instances.pred_boxes",
    "instances.pred_classes",
    "instances.pred_masks",
    "instances.scores",
    "instances.image_size",
]


# A narrow VGG encoder: the export path is the same as the paper's widths, the runs are cheaper.
NARROW_UNETPP = ["MODEL.VGG.STAGE_CHANNELS", "[8, 16, 32, 64, 128]"]


def _unetpp_config():
    return os.path.join(REPO, "configs", "quick", "unetpp_vgg.yaml")


def _model_and_samples(config_file, opts, sizes):
    torch.manual_seed(0)
    cfg = setup_cfg(config_file, opts)
    model = build_model(cfg).eval()
    samples = [
        image_to_model_input(
            generate_synthetic_nuclei_image(seed, image_size=size)[0],
            cfg,
            cfg.MODEL.DEVICE,
            f"synthetic:{seed}",
        )
        for seed, size in enumerate(sizes)
    ]
    return cfg, model, samples


def _run_written_export(path, image):
    """Run the exported file as a user would: TorchScript with torch.jit.load, ONNX with
    onnxruntime."""
    if path.endswith(".ts"):
        module = torch.jit.load(path)
        with torch.no_grad():
            return tuple(module(image))
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return tuple(torch.from_numpy(o) for o in session.run(None, {"image": image.numpy()}))


def _assert_close(eager, exported, atol):
    assert len(eager) == len(exported)
    for a, b in zip(eager, exported):
        assert a.shape == b.shape
        if a.numel():
            assert float((a.double() - b.double()).abs().max()) <= atol


def _third_image(cfg, size):
    """An image the export was neither traced nor checked on, of yet another size."""
    rgb = generate_synthetic_nuclei_image(7, image_size=size)[0]
    return image_to_model_input(rgb, cfg, "cpu", "synthetic:7").image


@pytest.fixture(scope="module")
def mask_rcnnpp():
    # The traced image is square; the second sample has another aspect ratio.
    return _model_and_samples(MASK_RCNNPP, SMALL_RCNN, [(120, 120), (120, 160)])


def test_mask_rcnnpp_torchscript_from_the_command_line(mask_rcnnpp, tmp_path, run_script):
    cfg, model, _ = mask_rcnnpp
    image = tmp_path / "nuclei.png"
    cv2.imwrite(
        str(image), generate_synthetic_nuclei_image(3, image_size=(120, 160))[0][:, :, ::-1]
    )
    weights = tmp_path / "random_init.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "export"
    proc = run_script(
        "tools/export_model.py",
        "--config-file",
        MASK_RCNNPP,
        "--format",
        "torchscript",
        "--output",
        out,
        "--sample-image",
        image,
        *SMALL_RCNN,
        "MODEL.WEIGHTS",
        weights,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    assert f"Wrote {out / 'model.ts'}" in printed and "instances.pred_boxes" in printed
    info = json.loads((out / EXPORT_INFO_FILE).read_text())
    assert info["outputs"] == RCNN_NAMES
    assert set(info["check"]["max_abs_diff"]) == set(RCNN_NAMES)
    assert info["samples"][0] == {
        "source": str(image),
        "input_size": [96, 128],
        "original_size": [120, 160],
    }
    assert (out / "model_ts_IR.txt").stat().st_size > 0  # Detectron2's IR dump
    assert not [p for p in os.listdir(out) if p.startswith(".")], "no temporary files left"

    # Independent of the tool's own check: the written file against the eager model.
    third = _third_image(cfg, (112, 80))
    eager = run_eager(build_traceable_model(model, third), third)
    assert len(eager[0]) > 0, "random-init heads keep detections on a nuclei image"
    _assert_close(eager, _run_written_export(str(out / "model.ts"), third), atol=1e-4)


def test_mask_rcnnpp_onnx_round_trip(mask_rcnnpp, tmp_path):
    cfg, model, samples = mask_rcnnpp
    info = export_model(cfg, model, samples, export_format="onnx", output_dir=str(tmp_path))
    assert info["outputs"] == RCNN_NAMES and info["opset"] == 17
    assert json.loads((tmp_path / EXPORT_INFO_FILE).read_text())["check"] == info["check"]
    assert [s["input_size"] for s in info["samples"]] == [[96, 96], [96, 128]]
    assert sorted(os.listdir(tmp_path)) == [EXPORT_INFO_FILE, "model.onnx"]
    third = _third_image(cfg, (112, 80))
    eager = run_eager(build_traceable_model(model, samples[0].image), third)
    # ONNX Runtime's kernels differ from PyTorch's by float rounding (measured: ~1e-4 px).
    exported = _run_written_export(str(tmp_path / "model.onnx"), third)
    assert len(eager[0]) > 0 and len(exported[0]) == len(eager[0])
    _assert_close(eager, exported, atol=1e-2)


def test_onnx_opset_below_16_is_refused_naming_roi_align(mask_rcnnpp, tmp_path):
    cfg, model, samples = mask_rcnnpp
    with pytest.raises(ValueError, match=r"--opset 11: .*ROIAlign\(aligned=True\).*16"):
        export_model(cfg, model, samples, export_format="onnx", output_dir=str(tmp_path), opset=11)
    assert not tmp_path.exists() or not os.listdir(tmp_path)


class _ModelWithoutOnnxOp(torch.nn.Module):
    """Semantic-style model whose only op (erfcx) has no ONNX translation."""

    def forward(self, inputs):
        return [{"sem_seg": torch.special.erfcx(inputs[0]["image"])}]


def test_onnx_export_failure_names_the_operator():
    image = torch.rand(3, 8, 8)
    adapter = build_traceable_model(_ModelWithoutOnnxOp().eval(), image)
    with pytest.raises(
        OnnxExportError, match=r"opset 17\) of _ModelWithoutOnnxOp failed at aten::special_erfcx"
    ):
        export_onnx_bytes(adapter, image, flattened_output_names(adapter), 17)


@pytest.mark.parametrize(
    "export_format,views",
    [
        pytest.param("torchscript", [], id="torchscript"),
        pytest.param("onnx", [], id="onnx"),
        # the eight views of every image: the onnx path again, 8x the time
        pytest.param(
            "onnx",
            ["MODEL.UNETPP.TEST_DIHEDRAL_MEAN", "True"],
            id="onnx_dihedral_mean",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_unetpp_export_round_trip(export_format, views, tmp_path):
    # 64x64 traced, 48x80 (odd multiple of 16 wide) and 45x70 (padded, cropped back) checked.
    cfg, model, samples = _model_and_samples(
        _unetpp_config(), NARROW_UNETPP + views, [(64, 64), (48, 80)]
    )
    info = export_model(
        cfg, model, samples, export_format=export_format, output_dir=str(tmp_path), dump_ir=False
    )
    assert info["outputs"] == ["sem_seg"]
    assert info["input"]["resize_before"] is None
    odd = _third_image(cfg, (45, 70))
    eager = run_eager(build_traceable_model(model, samples[0].image), odd)
    assert eager[0].shape[-2:] == (45, 70)
    _assert_close(eager, _run_written_export(str(tmp_path / info["file"]), odd), atol=1e-4)


def test_interior_boundary_unetpp_exports_its_class_probabilities(tmp_path):
    # the nuclei come from numpy post-processing, which a trace would freeze: the export holds
    # the 3 class probabilities and names the function that makes nuclei of them
    overrides = NARROW_UNETPP + [
        "MODEL.UNETPP.TARGET",
        "interior_boundary",
        "MODEL.UNETPP.NUM_CLASSES",
        "3",
    ]
    cfg, model, samples = _model_and_samples(_unetpp_config(), overrides, [(64, 64), (48, 80)])
    info = export_model(
        cfg, model, samples, export_format="torchscript", output_dir=str(tmp_path), dump_ir=False
    )
    assert info["outputs"] == ["sem_seg"]
    assert "nuclei_from_interior_boundary" in info["postprocessing"]
    odd = _third_image(cfg, (45, 70))
    exported = _run_written_export(str(tmp_path / info["file"]), odd)
    assert exported[0].shape == (3, 45, 70)
    with torch.no_grad():
        expected = model.predict_probabilities(model.normalize_image(odd))
    _assert_close((expected,), exported, atol=1e-4)


def test_mismatch_writes_nothing_and_explains(tmp_path):
    # Tracing replays one control flow: a window-by-window sample (side > 64) cannot match a
    # graph traced on a whole 48x48 image. The tool must say so and write nothing.
    cfg, model, samples = _model_and_samples(
        _unetpp_config(),
        NARROW_UNETPP + ["MODEL.UNETPP.SLIDING_WINDOW_SIZE", "64"],
        [(48, 48), (96, 96)],
    )
    with pytest.raises(ExportMismatchError) as e:
        export_model(cfg, model, samples, export_format="torchscript", output_dir=str(tmp_path))
    message = str(e.value)
    assert "synthetic:1: sem_seg: max abs difference" in message
    assert "SLIDING_WINDOW_SIZE 64" in message
    assert not tmp_path.exists() or not os.listdir(tmp_path)


# --------------------------------------------------------------------------------------
# The output check on hand-made outputs.
def _detections(boxes, scores, masks=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    masks = torch.full((n, 1, 4, 4), 0.5) if masks is None else masks
    return (
        boxes,
        torch.zeros(n, dtype=torch.int64),
        masks,
        torch.tensor(scores),
        torch.tensor([64, 64]),
    )


BOXES = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 52]]


def _check(eager, exported, **kwargs):
    return check_exported_outputs(RCNN_NAMES, [eager], [exported], ["img"], **kwargs)


def test_check_reports_max_abs_difference_per_output():
    eager = _detections(BOXES, [0.9, 0.8, 0.7])
    shifted = _detections(np.add(BOXES, 0.01).tolist(), [0.9, 0.8005, 0.7])
    report = _check(eager, shifted)
    assert report["max_abs_diff"]["instances.pred_boxes"] == pytest.approx(0.01, abs=1e-6)
    assert report["max_abs_diff"]["instances.scores"] == pytest.approx(0.0005, abs=1e-6)
    assert report["samples"][0]["num_detections"] == {"eager": 3, "exported": 3}


def test_check_fails_on_moved_box_and_changed_mask():
    eager = _detections(BOXES, [0.9, 0.8, 0.7])
    moved = _detections([BOXES[0], BOXES[1], [40, 40, 50, 53]], [0.9, 0.8, 0.7])
    with pytest.raises(
        ExportMismatchError, match=r"img: instances.: 2 detection\(s\) without a counterpart"
    ):
        _check(eager, moved)
    masks = torch.full((3, 1, 4, 4), 0.5)
    masks[1, 0, 2, 2] = 0.6
    with pytest.raises(ExportMismatchError, match=r"instances.pred_masks: max abs difference 0.1"):
        _check(eager, _detections(BOXES, [0.9, 0.8, 0.7], masks))


def test_check_pairs_detections_whatever_their_order():
    eager = _detections(BOXES, [0.8, 0.8, 0.7])
    swapped = _detections([BOXES[1], BOXES[0], BOXES[2]], [0.8, 0.8, 0.7])
    assert _check(eager, swapped)["max_abs_diff"]["instances.pred_boxes"] == 0.0


def test_check_tolerates_a_detection_at_the_score_threshold_only():
    eager = _detections(BOXES, [0.9, 0.8, 0.0502])
    fewer = _detections(BOXES[:2], [0.9, 0.8])
    report = _check(eager, fewer, score_threshold=0.05)
    assert report["samples"][0]["borderline_unmatched"] == 1
    with pytest.raises(ExportMismatchError, match="eager #2 \\(score 0.050\\)"):
        _check(eager, fewer, score_threshold=0.3)


def test_check_semantic_outputs_use_atol_and_rtol():
    eager = torch.linspace(-20, 20, 100).reshape(1, 10, 10)
    near = eager * (1 + 5e-4)
    tolerance = OutputTolerance(atol=1e-3, rtol=1e-3)
    report = check_exported_outputs(
        ["sem_seg"], [(eager,)], [(near,)], ["img"], tolerance=tolerance
    )
    assert report["max_abs_diff"]["sem_seg"] == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ExportMismatchError, match="sem_seg: max abs difference"):
        check_exported_outputs(
            ["sem_seg"], [(eager,)], [(eager + 0.05,)], ["img"], tolerance=tolerance
        )
    with pytest.raises(ExportMismatchError, match=r"sem_seg: shape \(1, 10, 9\)"):
        check_exported_outputs(["sem_seg"], [(eager,)], [(eager[..., :9],)], ["img"])


# --------------------------------------------------------------------------------------
# The command line.
def test_cli_says_to_repeat_sample_image_for_a_stray_path(tmp_path, run_script):
    image = tmp_path / "b.png"
    image.write_bytes(b"")
    proc = run_script(
        "tools/export_model.py",
        "--config-file",
        MASK_RCNNPP,
        "--format",
        "onnx",
        "--output",
        tmp_path,
        "--sample-image",
        "a.png",
        image,
        "MODEL.WEIGHTS",
        "w.pth",
    )
    assert proc.returncode == 2  # argparse's usage error
    assert "give one --sample-image per image path" in proc.stderr


def test_cli_missing_weights_exit_2_and_nothing_written(tmp_path, run_script):
    out = tmp_path / "export"
    proc = run_script(
        "tools/export_model.py",
        "--config-file",
        MASK_RCNNPP,
        "--format",
        "torchscript",
        "--output",
        out,
        *SMALL_RCNN,
        "MODEL.WEIGHTS",
        tmp_path / "missing.pth",
    )
    assert proc.returncode == 2
    assert f"MODEL.WEIGHTS: no such file: {tmp_path / 'missing.pth'}" in proc.stderr
    assert not out.exists()


def test_sample_images_are_found_as_predict_finds_inputs(tmp_path):
    from maskrcnnpp.export.sample_inputs import load_sample_inputs

    cfg = setup_cfg(os.path.join(REPO, "configs", "quick", "mask_rcnn_NestedFPN.yaml"), [])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.png", "a.tif", ".hidden.png"):
        cv2.imwrite(str(folder / name), np.full((20, 30), 90, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    samples = load_sample_inputs(cfg, [str(folder)])
    assert [os.path.basename(s.source) for s in samples] == ["a.tif", "b.png"]
    assert (samples[0].height, samples[0].width) == (20, 30)
    with pytest.raises(
        FileNotFoundError, match=r"--sample-image .*nothing\*\.png: pattern matches no file"
    ):
        load_sample_inputs(cfg, [str(tmp_path / "nothing*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: folder holds no image file"):
        load_sample_inputs(cfg, [str(tmp_path / "empty")])
