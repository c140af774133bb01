"""
tools/export_model.py --format bioimageio: BioImage Model Zoo packages of the semantic UNet++
(nucleus probability map) and of Mask R-CNN++ (nuclei label image, post-processing inside),
each written by the tool from saved weights, then loaded and run by bioimageio.core's own model
test, and its test output compared with what the project computes for the same image: the
eager model's probabilities, and NucleiPredictor's label image (what tools/predict.py writes).
"""

import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from test_export_model import MASK_RCNNPP, NARROW_UNETPP, SMALL_RCNN, _unetpp_config

from maskrcnnpp.checkpoint import load_model_weights
from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image
from maskrcnnpp.export.bioimageio_module import NucleusLabelImage
from maskrcnnpp.inference.predictor import NucleiPredictor

bioimageio_core = pytest.importorskip(
    "bioimageio.core",
    reason="the bioimageio extra (pip install -e '.[bioimageio]'); CI installs it",
)

COMMON = ["MODEL.DEVICE", "cpu"]


def _saved_weights(config_file, opts, path):
    """A randomly initialised model of the config, saved as a checkpoint (export refuses a
    model without weights)."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(config_file, opts))
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def _sample_images(folder):
    """Two small synthetic nuclei images of different sizes, written as PNG files (small
    enough that area-dependent detection caps stay at their floors)."""
    os.makedirs(folder)
    for seed, (height, width) in enumerate(((128, 128), (112, 144))):
        rgb = generate_synthetic_nuclei_image(seed, image_size=max(height, width))[0][
            :height, :width
        ]
        cv2.imwrite(
            os.path.join(folder, f"sample{seed}.png"), np.ascontiguousarray(rgb[:, :, ::-1])
        )
    return folder


def _export(run_script, config_file, opts, out):
    samples = _sample_images(os.path.join(os.path.dirname(out), "samples"))
    result = run_script(
        "tools/export_model.py", "--config-file", config_file, "--format", "bioimageio",
        "--output", out, "--sample-image", samples, *opts,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = os.path.join(out, "bioimageio")
    for name in (
        "rdf.yaml",
        "weights.pt",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "README.md",
        "LICENSE",
    ):
        assert os.path.isfile(os.path.join(folder, name)), name
    assert os.path.isfile(os.path.join(out, "bioimageio.zip"))
    return folder


def _bioimageio_test(source):
    """bioimageio.core's model test, run here on what the tool wrote."""
    summary = bioimageio_core.test_model(source, weight_format="torchscript", devices=["cpu"])
    failed = [
        f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"
    ]
    assert summary.status == "passed", failed
    names = [d.name for d in summary.details]
    assert any(n.startswith("Reproduce test outputs") for n in names), names


# the instance package (the shipped model's kind) runs the same checks in CI
@pytest.mark.slow
def test_semantic_package_passes_bioimageio_test(tmp_path, run_script):
    config_file = _unetpp_config()
    opts = NARROW_UNETPP + COMMON
    weights = _saved_weights(config_file, opts, tmp_path / "unetpp.pth")
    opts = opts + ["MODEL.WEIGHTS", weights]
    folder = _export(run_script, config_file, opts, str(tmp_path / "out"))
    _bioimageio_test(str(tmp_path / "out" / "bioimageio.zip"))

    # the package's test output is the eager model's nucleus probability of its test input
    test_input = np.load(os.path.join(folder, "test_input.npy"))
    test_output = np.load(os.path.join(folder, "test_output.npy"))
    assert test_input.dtype == np.uint8 and test_input.shape[:2] == (1, 3)
    assert test_output.shape == (1, 1) + test_input.shape[2:] and test_output.dtype == np.float32
    cfg = setup_cfg(config_file, opts)
    model = build_model(cfg).eval()
    load_model_weights(model, weights)
    image = torch.as_tensor(test_input[0]).float()
    if cfg.INPUT.FORMAT == "BGR":
        image = image.flip(0)
    with torch.no_grad():
        sem_seg = model([{"image": image}])[0]["sem_seg"]
    np.testing.assert_allclose(test_output[0, 0], (1 - sem_seg[0]).numpy(), atol=1e-4)
    assert 0.0 < test_output.min() and test_output.max() < 1.0


def test_instance_package_paints_the_label_image_of_predict(tmp_path, run_script):
    # A factor of 1: the resize is the one step done otherwise than tools/predict.py (see
    # test_label_module_resize_is_within_one_grey_level); the rest must agree pixel for pixel.
    # A score threshold of 0 keeps the random model's detections.
    opts = (
        SMALL_RCNN + COMMON + ["INPUT.SCALE_FACTOR_TEST", "1.0", "TEST.PREDICT.SCORE_THRESH", "0.0"]
    )
    weights = _saved_weights(MASK_RCNNPP, opts, tmp_path / "rcnn.pth")
    opts = opts + ["MODEL.WEIGHTS", weights]
    folder = _export(run_script, MASK_RCNNPP, opts, str(tmp_path / "out"))
    _bioimageio_test(os.path.join(folder, "rdf.yaml"))

    # one pass over the image, as the package does
    cfg = setup_cfg(MASK_RCNNPP, opts + ["TEST.PREDICT.MAX_UNTILED_SIZE", "4096"])
    predictor = NucleiPredictor(cfg)
    test_input = np.load(os.path.join(folder, "test_input.npy"))
    test_output = np.load(os.path.join(folder, "test_output.npy"))
    assert test_output.dtype == np.int32 and test_output.shape == (1, 1) + test_input.shape[2:]
    expected = predictor(np.ascontiguousarray(test_input[0].transpose(1, 2, 0))).labels
    assert expected.max() > 5  # a label image worth comparing
    np.testing.assert_array_equal(test_output[0, 0], expected)

    # the packaged TorchScript on an image of another size, as a consumer runs it
    module = torch.jit.load(os.path.join(folder, "weights.pt"))
    rgb = generate_synthetic_nuclei_image(7, image_size=120)[0][:, :100]
    with torch.no_grad():
        labels = module(torch.as_tensor(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float())
    assert labels.shape == (1, 1, 120, 100) and labels.dtype == torch.int32
    np.testing.assert_array_equal(labels[0, 0].numpy(), predictor(rgb).labels)


def test_label_module_resize_is_within_one_grey_level():
    """The package resizes by INPUT.SCALE_FACTOR_TEST with PyTorch (antialiased bilinear,
    rounded); tools/predict.py with PIL through Detectron2's ResizeTransform."""
    module = NucleusLabelImage(
        torch.nn.Identity(), bgr=False, scale_factor=1.5, score_threshold=0.5
    )
    for factor, size in ((1.5, 96), (0.8, 101)):
        module.scale_factor = factor
        rgb = generate_synthetic_nuclei_image(0, image_size=size)[0]
        height, width = rgb.shape[:2]
        resized, new_height, new_width = module._resized(
            torch.as_tensor(rgb.transpose(2, 0, 1).copy()).float(), height, width
        )
        reference = T.ResizeTransform(height, width, new_height, new_width, None).apply_image(rgb)
        assert resized.shape == (3, round(height * factor), round(width * factor))
        difference = np.abs(resized.numpy().transpose(1, 2, 0) - reference.astype(np.float32))
        assert difference.max() <= 1.0, (factor, difference.max())


def test_package_refuses_a_model_without_weights(tmp_path, run_script):
    result = run_script(
        "tools/export_model.py", "--config-file", MASK_RCNNPP, "--format", "bioimageio",
        "--output", tmp_path / "out", *SMALL_RCNN, *COMMON,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "MODEL.WEIGHTS is empty" in result.stderr
    assert not (tmp_path / "out" / "bioimageio.zip").exists()
