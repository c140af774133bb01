"""The napari plugin (maskrcnnpp/napari): its manifest, the reader of tools/predict.py's output
folders and the "Segment nuclei" widget, headless (Qt offscreen; pytest-xvfb gives OpenGL a
virtual display where there is none), checked against tools/predict.py on the same image with
the same model (a small random-weights model saved to a file)."""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before the QApplication is made

from detectron2.modeling import build_model  # noqa: E402

from maskrcnnpp.config import setup_cfg  # noqa: E402
from maskrcnnpp.napari.reader import get_reader  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK_CONFIG = os.path.join(REPO, "configs", "quick", "mask_rcnn_NestedFPN.yaml")
CSV_INTEGERS = ("label", "area", "bbox_x", "bbox_y", "bbox_width", "bbox_height")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """(config file, weights file) of a small Mask R-CNN++ with fixed random weights; inputs
    shrunk 2x and at most 8 detections, so that a prediction takes a second."""
    folder = tmp_path_factory.mktemp("model")
    config = folder / "model.yaml"
    config.write_text(
        f'_BASE_: "{QUICK_CONFIG}"\nINPUT:\n  SCALE_FACTOR_TEST: 0.5\nTEST:\n  DETECTIONS_PER_IMAGE: 8\n'
    )
    torch.manual_seed(0)
    model = build_model(setup_cfg(str(config)))
    weights = folder / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    return str(config), str(weights)


@pytest.fixture(scope="module")
def nuclei_image(tmp_path_factory):
    """A 96x120 gray PNG of bright discs on noise, values 0..255 (so that a min/max stretch
    gives it back); returns its path and pixels."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :120]
    image = rng.integers(0, 40, (96, 120)).astype(np.uint8)
    image[0, 0] = 0
    for cy, cx in [(20, 25), (30, 80), (70, 40), (75, 95), (50, 60)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = 255
    path = tmp_path_factory.mktemp("images") / "cells.png"
    cv2.imwrite(str(path), image)
    return str(path), image


@pytest.fixture(autouse=True)
def one_thread():
    """The widget predicts in this process: one thread, as tools/predict.py in run_script,
    so that both compute the same floats."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def predict_with_tool(run_script, model, image_path, out, *extra):
    config, weights = model
    proc = run_script(
        "tools/predict.py",
        "--config-file",
        config,
        "--input",
        image_path,
        "--output",
        out,
        *extra,
        "MODEL.WEIGHTS",
        weights,
        "TEST.PREDICT.SCORE_THRESH",
        "0.0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def read_csv_columns(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) for r in rows]) for c in rows[0]} if rows else {}


def assert_features_match_csv(features, csv_path):
    """The layer's features hold the CSV's rows, label k in row k - 1, and ``index`` = label."""
    expected = read_csv_columns(csv_path)
    assert len(expected["label"]) > 0
    for column, values in expected.items():
        np.testing.assert_allclose(
            np.asarray(features[column], float), values, atol=1e-4, err_msg=column
        )
    np.testing.assert_array_equal(np.asarray(features["index"]), expected["label"])


def test_manifest_is_valid():
    npe2 = os.path.join(os.path.dirname(sys.executable), "npe2")
    proc = subprocess.run([npe2, "validate", "maskrcnnpp"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_reader_opens_output_folder_and_one_image(
    make_napari_viewer, tmp_path, run_script, small_model, nuclei_image
):
    image_path, pixels = nuclei_image
    out = predict_with_tool(run_script, small_model, image_path, tmp_path / "out")
    labels_png = cv2.imread(str(out / "labels" / "cells.png"), cv2.IMREAD_UNCHANGED)
    assert labels_png.max() > 0

    assert get_reader(str(tmp_path)) is None  # not an output folder
    assert get_reader(image_path) is None
    viewer = make_napari_viewer()
    for path in (out, out / "measurements" / "cells.csv"):
        viewer.layers.clear()
        viewer.open(str(path), plugin="maskrcnnpp")
        assert [layer.name for layer in viewer.layers] == ["cells", "cells nuclei"]
        image, labels = viewer.layers
        np.testing.assert_array_equal(image.data, np.repeat(pixels[:, :, None], 3, axis=2))
        np.testing.assert_array_equal(labels.data, labels_png)
        assert_features_match_csv(labels.features, out / "measurements" / "cells.csv")

    # the input file gone: the overlay stands in for it, under its own name
    moved = tmp_path / "moved.png"
    os.rename(image_path, moved)
    try:
        viewer.layers.clear()
        viewer.open(str(out), plugin="maskrcnnpp")
        assert [layer.name for layer in viewer.layers] == ["cells overlay", "cells nuclei"]
    finally:
        os.rename(moved, image_path)

    # a CSV that does not describe the label image is refused, naming it
    csv_path = out / "measurements" / "cells.csv"
    csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="cells.csv"):
        get_reader(str(out))(str(out))


def run_widget(qtbot, widget):
    """Run the widget and wait for its worker (it re-enables the button when finished)."""
    assert widget.run() is not None, widget.status.value
    assert not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=300_000)


def test_widget_matches_tool_and_saves_its_outputs(
    make_napari_viewer, qtbot, tmp_path, run_script, small_model, nuclei_image
):
    from maskrcnnpp.napari.widget import CONFIG_AND_WEIGHTS, SegmentNucleiWidget

    image_path, _ = nuclei_image
    cli = predict_with_tool(
        run_script, small_model, image_path, tmp_path / "cli", "--extra-outputs", "label-tiff"
    )
    viewer = make_napari_viewer()
    (layer,) = viewer.open(image_path)  # napari's own reader: (H, W) uint8
    widget = SegmentNucleiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is layer and widget.channel.value is None
    widget.model.value = CONFIG_AND_WEIGHTS
    widget.config_file.value, widget.weights.value = small_model
    widget.score_threshold.value = 0.0
    widget.save.value = True
    widget.output_dir.value = str(tmp_path / "widget")
    widget.extra_outputs["label-tiff"].value = True
    run_widget(qtbot, widget)

    labels = viewer.layers["cells nuclei"]
    expected = cv2.imread(str(cli / "labels" / "cells.png"), cv2.IMREAD_UNCHANGED)
    assert expected.max() > 0
    np.testing.assert_array_equal(labels.data, expected)
    assert_features_match_csv(labels.features, cli / "measurements" / "cells.csv")
    assert widget.status.value.startswith(f"{expected.max()} nuclei in cells; saved in ")

    # the saved folder is the tool's, file for file
    saved = tmp_path / "widget"
    assert sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*")) == sorted(
        p.relative_to(cli).as_posix() for p in cli.rglob("*")
    )
    for relative in (
        "labels/cells.png",
        "measurements/cells.csv",
        "labels_tiff/cells.tif",
        "overlays/cells.png",
        "coco_instances_results.json",
    ):
        assert (saved / relative).read_bytes() == (cli / relative).read_bytes(), relative
    with open(saved / "coco_images.json") as f, open(cli / "coco_images.json") as g:
        assert json.load(f) == json.load(g)

    # a second run into the same folder is refused before any work, naming the folder
    assert widget.run() is None
    assert str(tmp_path / "widget") in widget.status.value and "not empty" in widget.status.value
    widget.overwrite.value = True
    widget.score_threshold.value = 1.0  # same model (cached), nothing that sure
    run_widget(qtbot, widget)
    assert viewer.layers["cells nuclei [1]"].data.max() == 0
    assert cv2.imread(str(saved / "labels" / "cells.png"), cv2.IMREAD_UNCHANGED).max() == 0


def test_widget_segments_the_chosen_channel(
    make_napari_viewer, qtbot, tmp_path, run_script, small_model, nuclei_image
):
    """A (channel, Y, X) layer: channel 1 holds the nuclei, channel 0 noise; the widget on
    channel 1 gives the tool's labels of channel 1 saved as a gray image."""
    from maskrcnnpp.napari.widget import CONFIG_AND_WEIGHTS, SegmentNucleiWidget

    image_path, pixels = nuclei_image
    cli = predict_with_tool(run_script, small_model, image_path, tmp_path / "cli")
    noise = np.random.default_rng(1).integers(0, 4000, pixels.shape).astype(np.uint16)
    # 16 bit: the chosen channel is stretched on its own, as the tool stretches an image
    stack = np.stack([noise, pixels.astype(np.uint16) * 16])
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="two channels")
    widget = SegmentNucleiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert [choice for choice in widget.channel.choices] == [0, 1]
    widget.channel.value = 1
    widget.model.value = CONFIG_AND_WEIGHTS
    widget.config_file.value, widget.weights.value = small_model
    widget.score_threshold.value = 0.0
    run_widget(qtbot, widget)
    expected = cv2.imread(str(cli / "labels" / "cells.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(viewer.layers["two channels nuclei"].data, expected)


def test_widget_reports_bad_choices(make_napari_viewer, qtbot, tmp_path, small_model):
    from maskrcnnpp.napari.widget import CONFIG_AND_WEIGHTS, SegmentNucleiWidget

    viewer = make_napari_viewer()
    widget = SegmentNucleiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.run() is None and widget.status.value == "no image layer to segment"
    viewer.add_image(np.zeros((2, 3, 16, 16)), name="zstack")
    assert widget.run() is None and "zstack" in widget.status.value
    viewer.add_image(np.zeros((16, 16)), name="flat")
    widget.image.value = viewer.layers["flat"]
    widget.model.value = CONFIG_AND_WEIGHTS
    widget.config_file.value = small_model[0]
    widget.weights.value = str(tmp_path / "missing.pth")
    # napari reports a worker's error in the Qt event loop too (a notification): that error
    # is the one expected, and only it
    with qtbot.capture_exceptions() as caught:
        run_widget(qtbot, widget)
    assert all(isinstance(exception, FileNotFoundError) for _, exception, _ in caught)
    assert isinstance(widget.error, FileNotFoundError)
    assert f"no such file: {tmp_path / 'missing.pth'}" in widget.status.value
    assert "flat nuclei" not in viewer.layers


@pytest.mark.slow  # the docs' picture: a whole napari window in a subprocess
def test_screenshot_tool(tmp_path, run_script, small_model, nuclei_image):
    """The command of docs/viewers.md that makes its napari screenshot."""
    config, weights = small_model
    png = tmp_path / "shot.png"
    proc = run_script(
        "tools/napari_screenshot.py",
        "--config-file",
        config,
        "--weights",
        weights,
        "--input",
        nuclei_image[0],
        "--output",
        png,
        "--score-thresh",
        "0.0",
        "--size",
        "900x500",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shot = cv2.imread(str(png))
    assert shot.shape[0] >= 400 and shot.shape[1] >= 800 and shot.std() > 10
    assert png.stat().st_size < 300_000
    proc = run_script(
        "tools/napari_screenshot.py",
        "--model",
        "no_such_model",
        "--input",
        nuclei_image[0],
        "--output",
        tmp_path / "no.png",
    )
    assert proc.returncode == 2 and "'no_such_model' is not a shipped model" in proc.stderr
    assert not (tmp_path / "no.png").exists()
