"""
tools/predict.py and maskrcnnpp/inference: tiling and its keep rule (checked exhaustively in
1-D), tiled prediction with deterministic fake instance and semantic models on nuclei that
straddle tile borders and corners (neither doubled nor cut), the pieces (painting, RLE,
measurements, inputs), and one end-to-end run of a randomly initialised Mask R-CNN++ on a
folder mixing good files, a truncated PNG, a 16-bit TIFF, a grayscale JPEG, an RGBA PNG, a 3x5
image and a 2500x2500 image (tiled), with every --extra-outputs format (read back as in
tests/inference/test_exchange_formats.py).
"""

import csv
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import roifile
import tifffile
import torch
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from test_exchange_formats import geojson_mask, rasterise

from maskrcnnpp.inference import (
    MEASUREMENT_COLUMNS,
    NucleiPredictor,
    collect_image_files,
    mask_iou,
    measure_nuclei,
    tile_axis,
    tile_image,
    unique_output_names,
)
from maskrcnnpp.structures import crop_masks, label_image_to_rles, paint_instances
from maskrcnnpp.structures.label_image import masks_to_label_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK_CONFIG = os.path.join(REPO, "configs", "quick", "mask_rcnn_NestedFPN.yaml")
UNETPP_CONFIG = os.path.join(REPO, "configs", "quick", "unetpp_vgg.yaml")


# --------------------------------------------------------------------------------------------
# Tiling and the keep rule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,tile,overlap",
    [(1, 5, 2), (5, 5, 2), (6, 5, 2), (37, 10, 4), (100, 16, 7), (2500, 1024, 128), (301, 100, 32)],
)
def test_tile_axis_covers_overlaps_and_partitions(length, tile, overlap):
    tiles = tile_axis(length, tile, overlap)
    assert tiles[0][0] == 0 and tiles[-1][1] == length
    cores = np.zeros(length, int)
    for index, (start, end, core_start, core_end) in enumerate(tiles):
        assert end - start == min(tile, length)
        assert start <= core_start < core_end <= end
        cores[core_start:core_end] += 1
        if index:
            assert tiles[index - 1][1] - start >= overlap  # overlap with the previous tile
            assert tiles[index - 1][3] == core_start
    assert (cores == 1).all()
    # no more tiles than needed
    assert len(tiles) == (1 if length <= tile else -(-(length - overlap) // (tile - overlap)))


@pytest.mark.parametrize("length,tile,overlap", [(60, 16, 7), (61, 20, 9), (50, 11, 10)])
@pytest.mark.parametrize("axis", ["y", "x"])
def test_keep_rule_keeps_every_small_nucleus_once_whole(length, tile, overlap, axis):
    """Every 1-D nucleus [p, p + d) with d < overlap, seen by each tile as its part inside the
    tile, is kept by exactly one tile, and that tile saw it whole."""
    tiles = (
        tile_image(length, 1, tile, overlap)
        if axis == "y"
        else tile_image(1, length, tile, overlap)
    )
    for diameter in range(1, overlap):
        for start in range(0, length - diameter + 1):
            end = start + diameter
            kept = []
            for t in tiles:
                t0, t1 = (t.y0, t.y1) if axis == "y" else (t.x0, t.x1)
                seen_start, seen_end = max(start, t0), min(end, t1)
                if seen_start >= seen_end:
                    continue
                box = (seen_start, 0, seen_end, 1) if axis == "y" else (0, seen_start, 1, seen_end)
                if t.core_holds_box_centre(*box):
                    kept.append((seen_start, seen_end))
            assert kept == [(start, end)], (diameter, start, kept)


def test_tiling_rejects_bad_sizes():
    with pytest.raises(ValueError, match="overlap"):
        tile_axis(100, 10, 10)
    with pytest.raises(ValueError, match="tile size"):
        tile_axis(100, 0, 0)


# --------------------------------------------------------------------------------------------
# Pieces: painting, RLE, measurements, inputs
# --------------------------------------------------------------------------------------------


def test_paint_instances_matches_full_size_label_image():
    rng = np.random.default_rng(0)
    for _ in range(30):
        height, width, count = 23, 31, int(rng.integers(0, 9))
        masks = np.zeros((count, height, width), bool)
        for mask in masks:
            y, x = rng.integers(0, [height, width])
            mask[y : y + rng.integers(1, 12), x : x + rng.integers(1, 12)] = True
        scores = rng.choice([0.3, 0.5, 0.9], size=count)  # ties included
        labels, kept_scores = paint_instances(height, width, crop_masks(masks, scores))
        expected = masks_to_label_image(masks, scores)
        np.testing.assert_array_equal(labels, expected)
        assert kept_scores.shape == (labels.max(),)
        for label, score in enumerate(kept_scores, 1):
            winners = np.flatnonzero([(masks[i] & (labels == label)).any() for i in range(count)])
            assert score in scores[winners]


def test_label_image_to_rles_matches_pycocotools():
    rng = np.random.default_rng(1)
    for _ in range(50):
        labels = rng.integers(0, 6, size=rng.integers(1, 25, size=2))
        labels[rng.random(labels.shape) < 0.5] = 0
        rles = label_image_to_rles(labels)
        assert len(rles) == labels.max()
        for label, rle in enumerate(rles, 1):
            mask = labels == label
            assert rle["size"] == list(labels.shape)
            np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), mask)


def test_measure_nuclei_by_hand():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 2:5] = 1  # 2 x 3 block
    labels[5, 7] = 2  # one pixel in the corner
    image = np.zeros((6, 8, 3), np.uint8)
    image[1:3, 2:5] = [30, 60, 90]  # grey 60
    image[5, 7] = 255
    rows = measure_nuclei(labels, np.array([0.9, 0.6]), image)
    assert list(rows[0]) == list(MEASUREMENT_COLUMNS)
    assert [r["area"] for r in rows] == [6, 1]
    assert (rows[0]["centroid_y"], rows[0]["centroid_x"]) == (1.5, 3.0)
    assert (rows[1]["centroid_y"], rows[1]["centroid_x"]) == (5.0, 7.0)
    assert [rows[0][k] for k in ("bbox_x", "bbox_y", "bbox_width", "bbox_height")] == [2, 1, 3, 2]
    assert [rows[1][k] for k in ("bbox_x", "bbox_y", "bbox_width", "bbox_height")] == [7, 5, 1, 1]
    assert [r["mean_intensity"] for r in rows] == [60.0, 255.0]
    assert [r["score"] for r in rows] == [0.9, 0.6]
    with pytest.raises(ValueError, match="0..1"):
        measure_nuclei(labels, np.array([0.9]), image)


def test_collect_image_files_and_names(tmp_path):
    for rel in ("a/x.png", "a/y.TIF", "a/notes.txt", "a/.hidden.png", "b/x.jpg", "b/deep/z.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files, problems = collect_image_files(
        [
            str(tmp_path / "a"),
            str(tmp_path / "b" / "*.jpg"),
            str(tmp_path / "a" / "x.png"),  # again: listed once
            str(tmp_path / "b" / "**" / "*.png"),
            str(tmp_path / "missing.png"),
            str(tmp_path / "nothing*.png"),
            "MODEL.WEIGHTS",
        ]
    )
    assert [os.path.relpath(f, tmp_path) for f in files] == [
        "a/x.png",
        "a/y.TIF",
        "b/x.jpg",
        "b/deep/z.png",
    ]
    reasons = dict(problems)
    assert reasons[str(tmp_path / "missing.png")] == "no such file or folder"
    assert reasons[str(tmp_path / "nothing*.png")] == "pattern matches no file"
    assert "config key" in reasons["MODEL.WEIGHTS"]
    assert unique_output_names(["a/x.png", "b/x.jpg", "c/y.tif", "d/x.png", "e/y 1.png"]) == [
        "x_png",
        "x_jpg",
        "y",
        "x_png-2",
        "y_1",
    ]


# --------------------------------------------------------------------------------------------
# Tiled prediction with deterministic fake models
# --------------------------------------------------------------------------------------------

RADIUS = 8  # discs of diameter 17 < overlap


class FakeDiscDetector(torch.nn.Module):
    """An instance model that finds bright discs exactly: one instance per 8-connected
    component of channel 0 > 127 of the (RGB) input, score 0.9 (0.4 for components whose
    channel 1 is dark, to test the threshold). Counts what it reports."""

    def __init__(self):
        super().__init__()
        self.num_detections = 0

    def forward(self, batched_inputs):
        outputs = []
        for item in batched_inputs:
            image = item["image"].numpy().transpose(1, 2, 0)
            assert image.shape[:2] == (item["height"], item["width"])
            count, components = cv2.connectedComponents(
                (image[:, :, 0] > 127).astype(np.uint8), connectivity=8
            )
            masks = (
                np.stack([components == k for k in range(1, count)])
                if count > 1
                else np.zeros((0,) + image.shape[:2], bool)
            )
            scores = [0.9 if image[:, :, 1][m].mean() > 127 else 0.4 for m in masks]
            boxes = [
                [
                    np.flatnonzero(m.any(0))[0],
                    np.flatnonzero(m.any(1))[0],
                    np.flatnonzero(m.any(0))[-1] + 1,
                    np.flatnonzero(m.any(1))[-1] + 1,
                ]
                for m in masks
            ]
            instances = Instances(image.shape[:2])
            instances.pred_masks = torch.from_numpy(masks)
            instances.scores = torch.tensor(scores, dtype=torch.float32)
            instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            self.num_detections += len(masks)
            outputs.append({"instances": instances})
        return outputs


class FakeDiscSegmenter(torch.nn.Module):
    """A binary semantic model: nucleus probability 0.8 where channel 0 > 127, else 0.1;
    returns probabilities or their logarithms (logits)."""

    def __init__(self, logits=False):
        super().__init__()
        self.logits = logits

    def forward(self, batched_inputs):
        outputs = []
        for item in batched_inputs:
            bright = item["image"][0] > 127
            nucleus = torch.where(bright, torch.tensor(0.8), torch.tensor(0.1))
            probs = torch.stack([1 - nucleus, nucleus])
            outputs.append({"sem_seg": probs.log() if self.logits else probs})
        return outputs


def disc_image(height, width, tile, overlap):
    """
    Discs centred on every tile edge, core boundary and near-border position (both axes,
    so also on tile corners), greedily thinned so that no two touch.

    Returns:
        (ndarray, list[ndarray]): (H, W, 3) uint8 RGB image and the discs' (H, W) masks; a
        disc whose centre row is odd has a dark green channel (score 0.4 from the detector).
    """
    interesting = set()
    for length, axis in ((height, 0), (width, 1)):
        coords = {RADIUS - 3, length - RADIUS + 2}
        for start, end, core_start, core_end in tile_axis(length, tile, overlap):
            coords |= {start, end - 1, core_start, core_end, core_start - 1}
        interesting.add((axis, tuple(sorted(c for c in coords if 0 <= c < length))))
    rows = dict(interesting)[0]
    columns = dict(interesting)[1]
    centres = []
    for y in rows:
        for x in columns:
            if all((y - cy) ** 2 + (x - cx) ** 2 > (2 * RADIUS + 3) ** 2 for cy, cx in centres):
                centres.append((y, x))
    yy, xx = np.mgrid[:height, :width]
    image = np.zeros((height, width, 3), np.uint8)
    discs = []
    for cy, cx in centres:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2
        discs.append(disc)
        image[disc] = [255, 40 if cy % 2 else 255, 0]
    return image, discs


def fake_predictor(model, **overrides):
    kwargs = dict(
        model=model,
        augmentations=[],
        input_format="RGB",
        max_untiled_size=90,
        tile_size=90,
        tile_overlap=24,
        score_thresh=0.5,
    )
    kwargs.update(overrides)
    return NucleiPredictor(**kwargs)


def assert_same_nuclei(labels, discs):
    """labels holds exactly the discs: one label per disc, equal masks."""
    assert labels.max() == len(discs)
    found = sorted(tuple(np.flatnonzero(labels == k)) for k in range(1, labels.max() + 1))
    expected = sorted(tuple(np.flatnonzero(d)) for d in discs)
    assert found == expected


def test_tiled_instances_neither_doubled_nor_cut():
    height, width = 250, 330
    image, discs = disc_image(height, width, 90, 24)
    bright = [d for d in discs if image[d][0, 1] == 255]
    assert 10 < len(bright) < len(discs)  # both scores present
    detector = FakeDiscDetector()
    prediction = fake_predictor(detector)(image)
    assert (
        prediction.num_tiles == len(tile_axis(height, 90, 24)) * len(tile_axis(width, 90, 24)) > 9
    )
    # The tiles saw the nuclei on their borders twice or more, often cut: the merge is tested.
    assert detector.num_detections > 1.5 * len(discs)
    assert_same_nuclei(prediction.labels, bright)
    np.testing.assert_allclose(prediction.scores, 0.9)
    # The same nuclei as predicting the whole image at once.
    whole = fake_predictor(FakeDiscDetector(), max_untiled_size=1000)(image)
    assert whole.num_tiles == 1
    assert_same_nuclei(whole.labels, bright)


@pytest.mark.parametrize("logits", [False, True])
def test_tiled_semantic_components_neither_doubled_nor_cut(logits):
    image, discs = disc_image(200, 260, 90, 24)
    prediction = fake_predictor(FakeDiscSegmenter(logits))(image)
    assert prediction.num_tiles > 4
    assert_same_nuclei(prediction.labels, discs)
    np.testing.assert_allclose(prediction.scores, 0.8, rtol=1e-5)
    # Above the threshold, every component is dropped.
    none = fake_predictor(FakeDiscSegmenter(logits), score_thresh=0.85)(image)
    assert none.labels.max() == 0 and none.scores.shape == (0,)


class ContextBiasedDetector(FakeDiscDetector):
    """Like FakeDiscDetector, but moves each mask 1 px along x toward the centre of the image
    it is given: a model whose prediction depends on context, as a real one does."""

    def forward(self, batched_inputs):
        outputs = super().forward(batched_inputs)
        for item, output in zip(batched_inputs, outputs):
            masks = output["instances"].pred_masks.numpy()
            moved = np.zeros_like(masks)
            for index, mask in enumerate(masks):
                columns = np.flatnonzero(mask.any(0))
                step = 1 if (columns[0] + columns[-1]) / 2 < (item["width"] - 1) / 2 else -1
                moved[index] = np.roll(mask, step, axis=1)
            output["instances"].pred_masks = torch.from_numpy(moved)
        return outputs


def test_cross_tile_duplicates_merged():
    """A disc centred on the core boundary of two tiles; each tile predicts it 1 px toward its
    own centre, so both centres fall in their own core: the IoU merge keeps one."""
    height, width, tile, overlap = 60, 160, 100, 40
    (_, _, _, boundary), _ = tile_axis(width, tile, overlap)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 30) ** 2 + (xx - boundary) ** 2 <= RADIUS**2
    image = np.zeros((height, width, 3), np.uint8)
    image[disc] = 255
    settings = dict(max_untiled_size=100, tile_size=tile, tile_overlap=overlap)
    merged = fake_predictor(ContextBiasedDetector(), **settings)(image)
    assert merged.num_tiles == 2
    assert merged.labels.max() == 1
    np.testing.assert_array_equal(merged.labels == 1, np.roll(disc, -1, axis=1))  # tile 0's
    doubled = fake_predictor(ContextBiasedDetector(), tile_merge_iou=1.01, **settings)(image)
    assert doubled.labels.max() == 2  # the second copy leaves a sliver


def test_mask_iou_matches_full_size():
    rng = np.random.default_rng(2)
    for _ in range(20):
        masks = rng.random((2, 15, 17)) < 0.3
        masks[:, rng.integers(0, 15), rng.integers(0, 17)] = True
        a, b = crop_masks(masks, np.ones(2))
        expected = (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum()
        assert mask_iou(a, b) == pytest.approx(expected)


def test_predictor_rejects_bad_outputs_and_settings():
    class NoMasks(torch.nn.Module):
        def forward(self, batched_inputs):
            return [
                {"instances": Instances((item["height"], item["width"]))} for item in batched_inputs
            ]

    class Neither(torch.nn.Module):
        def forward(self, batched_inputs):
            return [{"panoptic_seg": None} for _ in batched_inputs]

    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="pred_masks"):
        fake_predictor(NoMasks())(image)
    with pytest.raises(ValueError, match="neither 'instances' nor 'sem_seg'"):
        fake_predictor(Neither())(image)
    with pytest.raises(ValueError, match="TEST.PREDICT.TILE_OVERLAP"):
        fake_predictor(Neither(), tile_overlap=90)
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        fake_predictor(Neither(), input_format="L")


# --------------------------------------------------------------------------------------------
# End to end: tools/predict.py
# --------------------------------------------------------------------------------------------


def write_mixed_folder(folder):
    """Good and bad files of every kind the tool must take; returns the bad file's path."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    image, _ = disc_image(200, 240, 1000, 0)
    noisy = np.clip(image.astype(int) + rng.integers(0, 60, image.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "good.png"), noisy[:, :, ::-1])
    encoded = cv2.imencode(".png", noisy)[1].tobytes()
    (folder / "truncated.png").write_bytes(encoded[: len(encoded) // 2])
    tifffile.imwrite(str(folder / "sixteen_bit.tif"), (noisy[:, :, 0].astype(np.uint16) * 16))
    cv2.imwrite(str(folder / "gray.jpg"), noisy[:, :, 0])
    cv2.imwrite(
        str(folder / "rgba.png"),
        np.dstack([noisy[:, :, ::-1], np.full(noisy.shape[:2], 200, np.uint8)]),
    )
    cv2.imwrite(str(folder / "tiny_3x5.png"), noisy[:3, :5])
    big = np.tile(noisy, (13, 11, 1))[:2500, :2500]
    cv2.imwrite(str(folder / "big_2500.png"), big)
    return str(folder / "truncated.png")


def check_outputs(out, expected_sizes):
    """Every image's label image, CSV and COCO results agree; returns {name: nuclei}."""
    with open(out / "coco_images.json") as f:
        images = {os.path.basename(i["file_name"]): i for i in json.load(f)["images"]}
    with open(out / "coco_instances_results.json") as f:
        results = json.load(f)
    assert set(images) == set(expected_sizes)
    with open(out / "coco_images.json") as f:
        coco = COCO()
        coco.dataset = dict(json.load(f), annotations=[])
    coco.createIndex()
    assert len(coco.loadRes(str(out / "coco_instances_results.json")).anns) == len(results)
    leftovers = [f for _, _, files in os.walk(out) for f in files if f.startswith(".")]
    assert leftovers == []  # atomic writes leave no temporary files
    counts = {}
    for file_name, (height, width) in expected_sizes.items():
        entry = images[file_name]
        name = os.path.splitext(file_name)[0]
        labels = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.shape == (height, width)
        assert (entry["height"], entry["width"]) == (height, width)
        overlay = cv2.imread(str(out / "overlays" / f"{name}.png"))
        assert overlay.shape == (height, width, 3)
        with open(out / "measurements" / f"{name}.csv") as f:
            rows = list(csv.DictReader(f))
        mine = [r for r in results if r["image_id"] == entry["id"]]
        num = int(labels.max())
        assert num == len(rows) == len(mine)
        areas = np.bincount(labels.ravel(), minlength=num + 1)
        assert (areas[1:] > 0).all()
        for k, (row, result) in enumerate(zip(rows, mine), 1):
            x, y, w, h = result["bbox"]
            assert [int(row[c]) for c in ("bbox_x", "bbox_y", "bbox_width", "bbox_height")] == [
                x,
                y,
                w,
                h,
            ]
            in_box = labels[y : y + h, x : x + w] == k
            # the box holds all of nucleus k and is tight
            assert int(row["label"]) == k and int(row["area"]) == in_box.sum() == areas[k]
            assert (
                in_box[0].any() and in_box[-1].any() and in_box[:, 0].any() and in_box[:, -1].any()
            )
            decoded = mask_util.decode(result["segmentation"])
            assert decoded.shape == (height, width) and decoded.sum() == areas[k]
            np.testing.assert_array_equal(decoded[y : y + h, x : x + w].astype(bool), in_box)
            ys, xs = np.nonzero(in_box)
            assert float(row["centroid_y"]) == pytest.approx(y + ys.mean(), abs=1e-4)
            assert float(row["centroid_x"]) == pytest.approx(x + xs.mean(), abs=1e-4)
            assert float(row["score"]) == pytest.approx(result["score"], abs=1e-4)
        counts[file_name] = num
    return counts, images


def check_extra_outputs(out, expected_sizes):
    """Each image's GeoJSON, ROI set and label TIFF hold the nuclei of its label image, in
    label order, named nucleus-<label>, with the CSV's measurements."""
    for file_name in expected_sizes:
        name = os.path.splitext(file_name)[0]
        labels = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        tiff = tifffile.imread(str(out / "labels_tiff" / f"{name}.tif"))
        assert tiff.dtype == np.uint16
        np.testing.assert_array_equal(tiff, labels)
        with open(out / "measurements" / f"{name}.csv") as f:
            rows = list(csv.DictReader(f))
        with open(out / "geojson" / f"{name}.geojson") as f:
            features = json.load(f)["features"]
        rois = roifile.roiread(str(out / "rois" / f"{name}.zip"))
        assert len(features) == len(rois) == len(rows) == labels.max()
        for k, (feature, roi, row) in enumerate(zip(features, rois, rows), 1):
            properties = feature["properties"]
            assert properties["name"] == roi.name == f"nucleus-{k}"
            assert properties["objectType"] == "detection"
            assert properties["measurements"] == {c: float(v) for c, v in row.items()}
            mask = labels == k
            np.testing.assert_array_equal(geojson_mask(feature["geometry"], labels.shape), mask)
            np.testing.assert_array_equal(
                rasterise(roi.coordinates(multi=True), labels.shape), mask
            )


def random_weights(config, folder):
    """A checkpoint of ``config``'s model with seeded random weights (prediction refuses an
    empty MODEL.WEIGHTS)."""
    from detectron2.modeling import build_model

    from maskrcnnpp.config import setup_cfg

    torch.manual_seed(0)
    path = os.path.join(folder, "random_init.pth")
    torch.save(
        {"model": build_model(setup_cfg(config, ["MODEL.DEVICE", "cpu"])).state_dict()}, path
    )
    return path


def test_predict_tool_on_mixed_folder(tmp_path, run_script):
    bad = write_mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    proc = run_script(
        "tools/predict.py",
        *[
            "--config-file",
            QUICK_CONFIG,
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(out),
            # every extra output; the overrides follow the formats directly
            "--extra-outputs",
            "geojson",
            "imagej-rois",
            "label-tiff",
            # small model inputs (every image and tile shrunk 10x) and few tiles: the point is
            # the files, not the nuclei
            "INPUT.SCALE_FACTOR_TEST",
            "0.1",
            "TEST.DETECTIONS_PER_IMAGE",
            "8",
            # random weights: keep every detection, so that there are nuclei to check
            "MODEL.WEIGHTS",
            random_weights(QUICK_CONFIG, tmp_path),
            "TEST.PREDICT.SCORE_THRESH",
            "0.0",
            "TEST.PREDICT.TILE_SIZE",
            "1400",
            "TEST.PREDICT.TILE_OVERLAP",
            "200",
        ],
    )
    stderr = proc.stderr
    assert proc.returncode == 1, stderr[-3000:]
    assert f"skipped {bad}: " in stderr and "truncated" in stderr
    assert not (out / "labels" / "truncated.png").exists()
    sizes = {
        "good.png": (200, 240),
        "sixteen_bit.tif": (200, 240),
        "gray.jpg": (200, 240),
        "rgba.png": (200, 240),
        "tiny_3x5.png": (3, 5),
        "big_2500.png": (2500, 2500),
    }
    counts, images = check_outputs(out, sizes)
    assert counts["good.png"] > 0 and counts["big_2500.png"] > 0
    assert images["big_2500.png"]["num_tiles"] == 4
    check_extra_outputs(out, sizes)
    assert not (out / "geojson" / "truncated.geojson").exists()
    assert all(images[n]["num_tiles"] == 1 for n in sizes if n != "big_2500.png")


def test_predict_tool_errors_name_the_fault(tmp_path, run_script):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    common = ["--config-file", QUICK_CONFIG, "--input", str(image), "--output", str(tmp_path / "o")]

    proc = run_script("tools/predict.py", *common, "TEST.PREDICT.TILE_SIZ", "5")
    assert proc.returncode == 2 and "TEST.PREDICT.TILE_SIZ" in proc.stderr
    proc = run_script("tools/predict.py", *common, "MODEL.WEIGHTS", tmp_path / "no.pth")
    assert proc.returncode == 2
    assert f"MODEL.WEIGHTS: no such file: {tmp_path / 'no.pth'}" in proc.stderr
    proc = run_script(
        "tools/predict.py", *common[:3], tmp_path / "missing", "--output", tmp_path / "o"
    )
    assert proc.returncode == 2
    assert f"skipped {tmp_path / 'missing'}: no such file or folder" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_predict_tool_with_semantic_unetpp(tmp_path, run_script):
    """The real semantic UNet++ (random weights) through tiles: on a noisy image its argmax
    holds many components, which must come out consistent."""
    noisy = np.random.default_rng(0).integers(0, 256, (120, 150, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "noisy.png"), noisy)
    out = tmp_path / "out"
    proc = run_script(
        "tools/predict.py",
        *[
            "--config-file",
            UNETPP_CONFIG,
            "--input",
            str(tmp_path / "noisy.png"),
            "--output",
            str(out),
            "MODEL.WEIGHTS",
            random_weights(UNETPP_CONFIG, tmp_path),
            "TEST.PREDICT.SCORE_THRESH",
            "0.0",
            "TEST.PREDICT.MAX_UNTILED_SIZE",
            "100",
            "TEST.PREDICT.TILE_SIZE",
            "96",
            "TEST.PREDICT.TILE_OVERLAP",
            "32",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts, images = check_outputs(out, {"noisy.png": (120, 150)})
    assert counts["noisy.png"] > 0
    # no --extra-outputs: today's outputs only
    assert sorted(os.listdir(out)) == [
        "coco_images.json",
        "coco_instances_results.json",
        "labels",
        "measurements",
        "overlays",
    ]
    assert images["noisy.png"]["num_tiles"] == len(tile_image(120, 150, 96, 32)) == 4
