"""
One pixel scale for instance models (maskrcnnpp/data/pixel_scale.py): training, evaluation,
prediction and export resize images by a factor, never to a size, through one builder. Fast:
fake models, small images, no training.
"""

import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import BoxMode
from test_reliability import DISC_RADIUS, ScaleSensitiveModel, disc_grid_image

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.data.build import build_nuclei_mapper
from maskrcnnpp.data.pixel_scale import (
    ScaleByFactor,
    build_instance_augmentations,
    scale_factor_at_test,
    scaled_size,
)
from maskrcnnpp.export.sample_inputs import image_to_model_input
from maskrcnnpp.inference import NucleiPredictor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(REPO, "configs", "quick", "mask_rcnn_NestedFPN.yaml")
DSB_CPU = os.path.join(REPO, "configs", "DSB2018", "cpu", "mask_rcnn_R_18_NestedFPN.yaml")
DSB_GPU = os.path.join(REPO, "configs", "DSB2018", "mask_rcnn_R_50_NestedFPN.yaml")
UNETPP = os.path.join(REPO, "configs", "quick", "unetpp_vgg.yaml")
CPU = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]


def _cfg(path, *opts):
    return setup_cfg(path, CPU + list(opts))


def _write(path, rgb):
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    return str(path)


def _record(file_name, rgb, masks=()):
    height, width = rgb.shape[:2]
    annotations = []
    for mask in masks:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "bbox": mask_util.toBbox(rle).tolist(),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "segmentation": rle,
                "iscrowd": 0,
            }
        )
    return {
        "file_name": file_name,
        "height": height,
        "width": width,
        "image_id": 0,
        "annotations": annotations,
    }


class _InputRecorder(torch.nn.Module):
    """Records the image tensors it is given; predicts nothing."""

    def __init__(self):
        super().__init__()
        self.images = []

    def forward(self, batched_inputs):
        from detectron2.structures import Instances

        outputs = []
        for item in batched_inputs:
            self.images.append(item["image"].clone())
            instances = Instances((item["height"], item["width"]))
            instances.pred_masks = torch.zeros(0, item["height"], item["width"], dtype=torch.bool)
            instances.scores = torch.zeros(0)
            outputs.append({"instances": instances})
        return outputs


# ------------------------------------------------------------------------------------------
# The configs' factors and the checks of the keys
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path,test,train",
    [(QUICK, 1.0, (1.0, 1.0)), (DSB_CPU, 1.5, (1.2, 1.9)), (DSB_GPU, 2.0, (1.6, 2.5))],
)
def test_configs_pixel_scale(path, test, train):
    cfg = _cfg(path)
    assert scale_factor_at_test(cfg) == test
    assert tuple(cfg.INPUT.SCALE_FACTOR_TRAIN) == train
    # the training jitter is centred on the test factor (geometric mean)
    assert np.sqrt(train[0] * train[1]) == pytest.approx(test, rel=0.02)


@pytest.mark.parametrize(
    "path,opts,message",
    [
        (
            QUICK,
            ["INPUT.SCALE_FACTOR_TEST", "0.0"],
            "INPUT.SCALE_FACTOR_TEST = 0.0 (set on the command line) must be a finite number > 0",
        ),
        (
            QUICK,
            ["INPUT.SCALE_FACTOR_TEST", "-1.5"],
            "INPUT.SCALE_FACTOR_TEST = -1.5 (set on the command line)",
        ),
        (
            QUICK,
            ["INPUT.SCALE_FACTOR_TRAIN", "(2.0, 1.0)"],
            "INPUT.SCALE_FACTOR_TRAIN = (2.0, 1.0) (set on the command line) must be (min, max)",
        ),
        (QUICK, ["INPUT.SCALE_FACTOR_TRAIN", "(1.0,)"], "INPUT.SCALE_FACTOR_TRAIN = (1.0,)"),
        (UNETPP, ["INPUT.SCALE_FACTOR_TEST", "2.0"], "must be 1 for semantic models"),
        (
            UNETPP,
            ["INPUT.SCALE_FACTOR_TRAIN", "(0.5, 2.0)"],
            "INPUT.SCALE_FACTOR_TRAIN = (0.5, 2.0)",
        ),
    ],
)
def test_bad_factors_are_refused_naming_key_and_value(path, opts, message):
    with pytest.raises(ValueError) as raised:
        setup_cfg(path, opts)
    assert message in str(raised.value)


def test_removed_reference_size_key_is_ignored():
    # a config.yaml written by the previous version still loads; the key has no effect
    cfg = _cfg(DSB_CPU, "TEST.PREDICT.REFERENCE_SIZE", "512")
    assert "REFERENCE_SIZE" not in cfg.TEST.PREDICT
    assert scale_factor_at_test(cfg) == 1.5


# ------------------------------------------------------------------------------------------
# The augmentation: factor range, boxes and masks follow
# ------------------------------------------------------------------------------------------
def test_scale_by_factor_draws_within_the_range_log_uniformly():
    np.random.seed(0)
    augmentation = ScaleByFactor(0.5, 2.0)
    image = np.zeros((100, 60, 3), np.uint8)
    factors = []
    for _ in range(400):
        resized = augmentation.get_transform(image).apply_image(image)
        new_h, new_w = resized.shape[:2]
        assert 50 <= new_h <= 200
        assert abs(new_w / 60 - new_h / 100) < 0.02  # one factor, both sides
        factors.append(new_h / 100)
    factors = np.array(factors)
    assert factors.min() < 0.55 and factors.max() > 1.8
    # log-uniform: as many shrunk as enlarged
    assert 0.4 < np.mean(factors < 1.0) < 0.6
    assert (
        ScaleByFactor(1.5).get_transform(image).apply_image(image).shape[:2]
        == (150, 90)
        == scaled_size(100, 60, 1.5)
    )
    assert type(ScaleByFactor(1.0).get_transform(image)).__name__ == "NoOpTransform"
    with pytest.raises(ValueError, match="0 < min <= max"):
        ScaleByFactor(2.0, 1.0)


def _disc_masks(height, width):
    masks = []
    for cy, cx, r in ((20, 30, 8), (60, 40, 12)):
        mask = np.zeros((height, width), np.uint8)
        cv2.circle(mask, (cx, cy), r, 1, -1)
        masks.append(mask.astype(bool))
    return masks


@pytest.mark.parametrize("low,high", [(2.0, 2.0), (0.6, 1.7)])
def test_training_mapper_scales_image_boxes_and_masks_alike(tmp_path, low, high):
    height, width = 80, 100
    rgb = np.zeros((height, width, 3), np.uint8)
    masks = _disc_masks(height, width)
    for mask in masks:
        rgb[mask] = 200
    record = _record(_write(tmp_path / "im.png", rgb), rgb, masks)
    cfg = _cfg(QUICK, "INPUT.SCALE_FACTOR_TRAIN", f"({low}, {high})", "INPUT.RANDOM_FLIP", "none")
    mapper = build_nuclei_mapper(cfg, is_train=True)
    np.random.seed(1)
    seen = set()
    for _ in range(6):
        out = mapper(record)
        new_h, new_w = out["image"].shape[1:]
        factor = new_h / height
        assert low - 0.02 <= factor <= high + 0.02 and abs(new_w / width - factor) < 0.02
        seen.add(new_h)
        instances = out["instances"]
        assert instances.gt_masks.tensor.shape[1:] == (new_h, new_w)
        for k, mask in enumerate(masks):
            ys, xs = np.nonzero(mask)
            sx, sy = new_w / width, new_h / height
            expected = [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy]
            np.testing.assert_allclose(instances.gt_boxes.tensor[k].numpy(), expected, atol=1.5)
            scaled_mask = instances.gt_masks.tensor[k].numpy()
            assert scaled_mask.sum() == pytest.approx(mask.sum() * factor**2, rel=0.1)
            # the mask stays on the nucleus' pixels of the resized image
            assert out["image"][0].numpy()[scaled_mask].mean() > 150
    assert len(seen) == 1 if low == high else len(seen) > 2


def test_training_crop_comes_after_the_resize():
    cfg = _cfg(DSB_CPU)
    names = [type(a).__name__ for a in build_instance_augmentations(cfg, is_train=True)]
    assert names == ["ScaleByFactor", "RandomCrop", "RandomFlip"]
    assert [type(a).__name__ for a in build_instance_augmentations(cfg, is_train=False)] == [
        "ScaleByFactor"
    ]
    assert build_instance_augmentations(_cfg(QUICK), is_train=False) == []


# ------------------------------------------------------------------------------------------
# Evaluation, prediction and export feed the model the same pixels
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [QUICK, DSB_CPU, DSB_GPU])
def test_evaluation_prediction_and_export_see_the_same_input(tmp_path, path):
    cfg = _cfg(path)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (130, 170, 3), dtype=np.uint8)
    record = _record(_write(tmp_path / "im.png", rgb), rgb)
    evaluated = build_nuclei_mapper(cfg, is_train=False)(record)["image"]
    recorder = _InputRecorder()
    NucleiPredictor(cfg, model=recorder)(rgb)
    predicted = recorder.images[0]
    exported = image_to_model_input(rgb, cfg, "cpu", "test").image
    factor = scale_factor_at_test(cfg)
    assert tuple(evaluated.shape[1:]) == scaled_size(130, 170, factor)
    assert torch.equal(evaluated.float(), predicted)
    assert torch.equal(evaluated.float(), exported)


def test_export_records_the_test_factor(monkeypatch, tmp_path):
    """export_info's resize_before is the factor evaluation and predict use (no tracing here:
    the recorded description is checked on the exporter's own dictionary)."""
    from maskrcnnpp.export import exporter

    cfg = _cfg(DSB_CPU)
    rgb = np.zeros((64, 80, 3), np.uint8)
    sample = image_to_model_input(rgb, cfg, "cpu", "zeros")
    assert tuple(sample.image.shape[1:]) == (96, 120) and (sample.height, sample.width) == (64, 80)
    monkeypatch.setattr(exporter, "build_traceable_model", lambda model, image: model)
    monkeypatch.setattr(exporter, "flattened_output_names", lambda adapter: ["sem_seg"])
    monkeypatch.setattr(exporter, "run_eager", lambda adapter, image: (image,))
    monkeypatch.setattr(exporter, "trace_torchscript", lambda adapter, image: None)
    monkeypatch.setattr(exporter, "torchscript_bytes", lambda module: b"")
    monkeypatch.setattr(exporter, "load_torchscript", lambda data, device: lambda image: (image,))
    monkeypatch.setattr(exporter, "check_exported_outputs", lambda *a, **k: {"max_abs_diff": {}})
    info = exporter.export_model(
        cfg,
        torch.nn.Identity(),
        [sample],
        export_format="torchscript",
        output_dir=str(tmp_path),
        dump_ir=False,
    )
    assert info["input"]["resize_before"] == {"scale_factor": 1.5, "interpolation": "bilinear"}
    assert info["samples"][0]["input_size"] == [96, 120] and info["samples"][0][
        "original_size"
    ] == [64, 80]
    quick_sample = image_to_model_input(rgb, _cfg(QUICK), "cpu", "zeros")
    assert tuple(quick_sample.image.shape[1:]) == (64, 80)


# ------------------------------------------------------------------------------------------
# A k x k mosaic gives k² times the nuclei, in evaluation as in prediction
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [QUICK, DSB_CPU])
def test_mosaic_has_nine_times_the_nuclei_in_evaluation_and_prediction(tmp_path, path):
    """Before: evaluation resized the 256 image and its 768 mosaic to the same shortest edge,
    so the mosaic's nuclei reached the model 3x smaller and were missed."""
    cfg = _cfg(path, "TEST.PREDICT.MAX_UNTILED_SIZE", "600")  # predict tiles the mosaic
    factor = scale_factor_at_test(cfg)
    model = ScaleSensitiveModel(factor)
    mapper = build_nuclei_mapper(cfg, is_train=False)
    single = disc_grid_image()
    mosaic = np.tile(single, (3, 3, 1))
    counts = {}
    for name, rgb in (("single", single), ("mosaic", mosaic)):
        inputs = mapper(
            _record(_write(tmp_path / f"{name}.png", rgb), rgb)
        )  # white discs: BGR = RGB
        evaluated = len(model([inputs])[0]["instances"])
        predicted = NucleiPredictor(cfg, model=model)(rgb)
        counts[name] = (evaluated, int(predicted.labels.max()))
    assert counts["single"] == (64, 64)
    evaluated, predicted = counts["mosaic"]
    assert abs(evaluated - 9 * 64) <= 0.05 * 9 * 64
    assert abs(predicted - 9 * 64) <= 0.05 * 9 * 64
    assert DISC_RADIUS * factor <= 16  # the discs stay apart at this factor
