"""
Multi-channel images (issue 33): the nuclear channel of CYX / YXC TIFFs, ImageJ hyperstacks
and OME-TIFFs (all written here by tifffile) chosen by 0-based index or by name; Z and T axes
refused naming them; a stack without a channel refused with its channels listed;
tools/predict.py --channel / TEST.PREDICT.CHANNEL giving the labels of the same channel saved
as a grayscale image; datasets/prepare_label_folder.py --channel writing the channel that
training then reads.
"""

import json
import os
import re

import cv2
import numpy as np
import pytest
import tifffile
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data import register_label_folder
from maskrcnnpp.data.image_io import (
    ImageReadError,
    check_channel_choice,
    parse_channel,
    read_image_rgb,
    read_image_unchanged,
)
from maskrcnnpp.data.instance_mapper import InstanceDatasetMapper
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK_CONFIG = os.path.join(REPO, "configs", "quick", "mask_rcnn_NestedFPN.yaml")
NAMES = ["Actin", "DAPI"]  # the nuclei are channel 1


def two_channels(seed=0, size=(96, 112)):
    """(2, H, W) uint16: channel 0 noise (another range), channel 1 synthetic nuclei (12 bit);
    and the nuclei's (H, W) label image."""
    rgb, masks = generate_synthetic_nuclei_image(seed, image_size=size)
    nuclei = rgb[:, :, 0].astype(np.uint16) * 16
    other = np.random.default_rng(seed).integers(1000, 30000, size, dtype=np.uint16)
    labels = (masks * np.arange(1, len(masks) + 1, dtype=np.uint16)[:, None, None]).sum(
        0, dtype=np.uint16
    )
    return np.stack([other, nuclei]), labels


def write_layout(folder, layout, stack, stem=None):
    """``stack`` (C, H, W) as a file of ``layout``; returns its path."""
    stem = stem or layout
    if layout == "cyx":
        path = folder / f"{stem}.tif"
        tifffile.imwrite(path, stack, metadata={"axes": "CYX"})
    elif layout == "yxc":
        path = folder / f"{stem}.tif"
        tifffile.imwrite(path, np.moveaxis(stack, 0, -1), metadata={"axes": "YXC"})
    elif layout == "imagej":
        path = folder / f"{stem}.tif"
        tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "CYX", "Labels": NAMES})
    elif layout == "ome":
        path = folder / f"{stem}.ome.tif"
        tifffile.imwrite(path, stack, metadata={"axes": "CYX", "Channel": {"Name": NAMES}})
    elif layout == "unnamed":  # no axes in the metadata: tifffile says QYX
        path = folder / f"{stem}.tif"
        tifffile.imwrite(path, stack)
    else:
        raise ValueError(layout)
    return path


LAYOUTS = ["cyx", "yxc", "imagej", "ome", "unnamed"]
NAMED = {"imagej": "ImageJ hyperstack", "ome": "OME-TIFF"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_of_each_layout_reads_as_that_channel_saved_gray(tmp_path, layout):
    stack, _ = two_channels()
    path = write_layout(tmp_path, layout, stack)
    gray = tmp_path / "nuclei.png"  # the channel saved as a 16-bit grayscale PNG
    assert cv2.imwrite(str(gray), stack[1])
    np.testing.assert_array_equal(read_image_unchanged(path, 1), stack[1])
    np.testing.assert_array_equal(read_image_unchanged(path, "1"), stack[1])
    expected = read_image_rgb(gray)
    np.testing.assert_array_equal(read_image_rgb(path, 1), expected)
    assert not np.array_equal(read_image_rgb(path, 0), expected)
    if layout in NAMED:  # by name, case-insensitive
        np.testing.assert_array_equal(read_image_rgb(path, "dapi"), expected)
        np.testing.assert_array_equal(read_image_rgb(path, "Actin"), read_image_rgb(path, 0))
    else:
        with pytest.raises(
            ImageReadError, match=r"no channel named 'DAPI': 2 channels \(.*\): 0, 1$"
        ):
            read_image_rgb(path, "DAPI")
    with pytest.raises(ImageReadError, match=r"no channel 2 \(0-based\): 2 channels"):
        read_image_rgb(path, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stack_without_a_channel_is_refused_listing_its_channels(tmp_path, layout):
    path = write_layout(tmp_path, layout, two_channels()[0])
    listed = "0 'Actin', 1 'DAPI'" if layout in NAMED else "0, 1"
    for read in (read_image_rgb, read_image_unchanged, check_channel_choice):
        with pytest.raises(ImageReadError) as error:
            read(path)
        message = str(error.value)
        assert message.startswith(f"cannot read image {path}: 2 channels (axes ")
        assert (
            f"): {listed}; choose the nuclear channel with --channel (0-based index, or name)"
            in message
        )
        assert "\n" not in message
        assert NAMED.get(layout, "") in message
    check_channel_choice(path, 1)  # a choice passes


@pytest.mark.parametrize(
    "write,axis",
    [
        (
            lambda p, s: tifffile.imwrite(
                p, np.stack([s] * 3), imagej=True, metadata={"axes": "ZCYX"}
            ),
            "a Z axis (depth) of 3 slices",
        ),
        (
            lambda p, s: tifffile.imwrite(p, np.stack([s] * 2), metadata={"axes": "TCYX"}),
            "a T axis (time) of 2 frames",
        ),
        (
            lambda p, s: tifffile.imwrite(p, s, metadata={"axes": "ZYX"}),
            "a Z axis (depth) of 2 slices",
        ),
    ],
    ids=["imagej-zstack", "ome-timelapse", "shaped-zstack"],
)
def test_z_and_t_axes_are_refused_naming_the_axis(tmp_path, write, axis):
    path = tmp_path / "stack.ome.tif"
    write(path, two_channels()[0])
    for channel in (None, 1):
        for read in (read_image_rgb, check_channel_choice):
            with pytest.raises(
                ImageReadError, match=re.escape(f"cannot read image {path}: {axis} (axes ")
            ):
                read(path, channel)


def test_rgb_and_grayscale_images(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[:, :, 0])
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "rgb.png"), rgb)  # as before
    for channel in (2, "blue", "Blue"):
        np.testing.assert_array_equal(
            read_image_unchanged(tmp_path / "rgb.png", channel), rgb[:, :, 2]
        )
    with pytest.raises(
        ImageReadError,
        match=r"no channel 3 \(0-based\): 3 channels \(RGB\): 0 'red', 1 'green', 2 'blue'",
    ):
        read_image_rgb(tmp_path / "rgb.png", 3)
    # a grayscale image is its one channel, whatever the choice
    for channel in (None, 0, 1, "DAPI"):
        np.testing.assert_array_equal(
            read_image_unchanged(tmp_path / "gray.png", channel), rgb[:, :, 0]
        )


def test_parse_channel():
    assert parse_channel(None) is None and parse_channel("") is None and parse_channel(" ") is None
    assert parse_channel(0) == 0 and parse_channel("2") == 2 and parse_channel(" 1 ") == 1
    assert parse_channel("DAPI") == "DAPI"
    for bad in (-1, "-1", 1.5, True, [1]):
        with pytest.raises(ValueError, match="channel"):
            parse_channel(bad)


# --------------------------------------------------------------------------------------------
# tools/predict.py
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The quick Mask R-CNN++ at a fixed random init, saved as training does."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(QUICK_CONFIG, ["MODEL.DEVICE", "cpu"]))
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return str(path)


def read_labels(out, name):
    labels = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    assert labels is not None, f"no labels/{name}.png"
    return labels


def test_predict_channel_gives_the_labels_of_the_channel_saved_gray(tmp_path, weights, run_script):
    folder = tmp_path / "in"
    folder.mkdir()
    stack, _ = two_channels()
    stacks = {
        layout: write_layout(folder, layout, stack) for layout in ("cyx", "yxc", "imagej", "ome")
    }
    assert cv2.imwrite(str(folder / "nuclei.png"), stack[1])  # the channel as a 16-bit gray PNG
    model = [
        "--config-file",
        QUICK_CONFIG,
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        weights,
        "TEST.DETECTIONS_PER_IMAGE",
        "20",
        "TEST.PREDICT.SCORE_THRESH",
        "0.0",  # random weights
    ]

    # --channel 1 on every layout; the gray PNG is read as it is
    out = tmp_path / "by_index"
    proc = run_script(
        "tools/predict.py", "--input", folder, "--output", out, "--channel", "1", *model
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = read_labels(out, "nuclei")
    assert expected.max() > 0
    for layout in ("cyx", "yxc", "imagej"):
        np.testing.assert_array_equal(read_labels(out, layout), expected, err_msg=layout)
    np.testing.assert_array_equal(read_labels(out, "ome.ome"), expected)

    # by name through the config key: the files without names are skipped, saying so
    out = tmp_path / "by_name"
    proc = run_script(
        "tools/predict.py",
        "--input",
        stacks["ome"],
        stacks["imagej"],
        stacks["cyx"],
        "--output",
        out,
        *model,
        "TEST.PREDICT.CHANNEL",
        "DAPI",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        f"skipped {stacks['cyx']}: no channel named 'DAPI': 2 channels (axes CYX, shape (2, 96, 112)): 0, 1"
        in proc.stderr
    )
    np.testing.assert_array_equal(read_labels(out, "ome.ome"), expected)
    np.testing.assert_array_equal(read_labels(out, "imagej"), expected)
    assert not (out / "labels" / "cyx.png").exists()

    # no channel: refused with the channels listed, before the model is built (exit 2)
    zstack = folder / "zstack.tif"
    tifffile.imwrite(zstack, np.stack([stack] * 3), imagej=True, metadata={"axes": "ZCYX"})
    proc = run_script(
        "tools/predict.py", "--input", stacks["ome"], zstack, "--output", tmp_path / "none", *model
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        f"error: skipped {stacks['ome']}: 2 channels (axes CYX, shape (2, 96, 112), OME-TIFF): "
        "0 'Actin', 1 'DAPI'; choose the nuclear channel with --channel (0-based index, or name)"
    ) in proc.stderr
    assert f"error: skipped {zstack}: a Z axis (depth) of 3 slices (axes ZCYX" in proc.stderr
    assert "error: no image to predict" in proc.stderr

    proc = run_script(
        "tools/predict.py",
        "--input",
        stacks["ome"],
        "--output",
        tmp_path / "bad",
        "--channel",
        "-1",
        *model,
    )
    assert proc.returncode == 2
    assert "TEST.PREDICT.CHANNEL (--channel): channel -1: indices start at 0" in proc.stderr


# --------------------------------------------------------------------------------------------
# Label folders
# --------------------------------------------------------------------------------------------


def test_label_folder_trains_on_the_chosen_channel(tmp_path, run_script):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    stacks, counts = {}, {}  # by file stem (n0.ome.tif's is n0.ome)
    for seed, layout in enumerate(("ome", "imagej", "cyx")):
        stack, labels = two_channels(seed)
        path = write_layout(images, layout, stack, stem=f"n{seed}")
        stem = path.name[: -len(".tif")]
        stacks[stem] = (path, stack)
        tifffile.imwrite(masks / f"{stem}.tif", labels)
        counts[stem] = int(labels.max())

    # without --channel every image is left out, its channels listed
    proc = run_script(
        "datasets/prepare_label_folder.py",
        "--images",
        images,
        "--labels",
        masks,
        "--out",
        tmp_path / "none",
    )
    assert proc.returncode == 1
    assert (
        f"{stacks['n1'][0]}: 2 channels (axes CYX, shape (2, 96, 112), ImageJ hyperstack): 0 'Actin', 1 'DAPI'"
        in proc.stderr
    )

    out = tmp_path / "out"
    proc = run_script(
        "datasets/prepare_label_folder.py",
        "--images",
        images,
        "--labels",
        masks,
        "--out",
        out,
        "--channel",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"channel 1 of each image: {out / 'channel_images'}" in proc.stdout
    with open(out / "annotations" / "instances_train.json") as f:
        coco = json.load(f)
    assert "channel 1 of each image, in channel_images/" in coco["info"]["description"]
    assert sorted(i["file_name"] for i in coco["images"]) == [
        "channel_images/n0.ome.tif",
        "channel_images/n1.tif",
        "channel_images/n2.tif",
    ]
    for image in coco["images"]:
        stem = os.path.basename(image["file_name"])[: -len(".tif")]
        source, stack = stacks[stem]
        written = out / image["file_name"]
        np.testing.assert_array_equal(tifffile.imread(written), stack[1])  # 16-bit kept
        assert tifffile.imread(written).dtype == np.uint16
        np.testing.assert_array_equal(read_image_rgb(written), read_image_rgb(source, 1))
        assert sum(a["image_id"] == image["id"] for a in coco["annotations"]) == counts[stem]

    # training reads these images: the registered dataset through the training mapper
    register_label_folder(str(out), name="multichannel_test")
    cfg = setup_cfg(QUICK_CONFIG, ["MODEL.DEVICE", "cpu"])
    mapper = InstanceDatasetMapper(cfg, is_train=False)
    for record in DatasetCatalog.get("multichannel_test_train"):
        stem = os.path.basename(record["file_name"])[: -len(".tif")]
        image = mapper(dict(record))["image"].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(image, read_image_rgb(stacks[stem][0], 1))  # gray: BGR == RGB
