"""The classical floor (Otsu + distance-transform watershed) on images with known nuclei, and
its scoring through NucleiEvaluator."""

import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog

from maskrcnnpp.data.image_io import read_image_rgb
from maskrcnnpp.evaluation import image_nuclei_stats
from maskrcnnpp.evaluation.classical_baseline import (
    evaluate_classical_baseline,
    otsu_watershed_labels,
)
from maskrcnnpp.structures.label_image import (
    coco_segmentations_to_label_image,
    label_image_to_instances,
)

# three separate discs and two touching ones (centres 18 px apart, radius 10: they overlap)
DISCS = [((30, 30), 9), ((90, 30), 11), ((150, 40), 8), ((50, 110), 10), ((68, 110), 10)]


def _synthetic_nuclei():
    """(150, 200, 3) uint8 RGB with bright discs on a dark noisy background, and the true
    (H, W) label image (the second touching disc keeps the shared pixels)."""
    height, width = 150, 200
    truth = np.zeros((height, width), dtype=np.int32)
    for label, (centre, radius) in enumerate(DISCS, start=1):
        cv2.circle(truth, centre, radius, label, thickness=-1)
    rng = np.random.default_rng(0)
    grey = np.where(truth > 0, 190, 40) + rng.normal(0, 6, truth.shape)
    image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return image, truth


def _best_iou_per_truth(truth, labels):
    ious = []
    for label in range(1, truth.max() + 1):
        gt = truth == label
        best = 0.0
        for pred_label in np.unique(labels[gt]):
            if pred_label == 0:
                continue
            pred = labels == pred_label
            best = max(best, (gt & pred).sum() / (gt | pred).sum())
        ious.append(best)
    return np.array(ious)


def test_finds_separate_and_touching_nuclei():
    image, truth = _synthetic_nuclei()
    labels = otsu_watershed_labels(image)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    # the two touching discs are split: five nuclei, labelled 1..5
    assert sorted(np.unique(labels)) == [0, 1, 2, 3, 4, 5]
    ious = _best_iou_per_truth(truth, labels)
    assert ious.min() > 0.8, ious
    stats = image_nuclei_stats(truth, labels)
    assert stats["num_matched"] == 5 and stats["iou"] > 0.9


def test_bright_field_image_is_inverted():
    image, truth = _synthetic_nuclei()
    # dark nuclei on a light background covering most of the image: same nuclei
    labels = otsu_watershed_labels(255 - image)
    assert labels.max() == 5
    assert _best_iou_per_truth(truth, labels).min() > 0.8


def test_blank_and_tiny_objects_give_no_nuclei():
    assert otsu_watershed_labels(np.full((40, 50, 3), 7, np.uint8)).max() == 0
    # a 2-px-thick blob has no seed above 2 px: it stays background
    image = np.zeros((40, 50, 3), np.uint8)
    image[10:12, 10:30] = 200
    assert otsu_watershed_labels(image).max() == 0


def test_refuses_a_grey_image():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB.*\(10, 10\)"):
        otsu_watershed_labels(np.zeros((10, 10), np.uint8))


def test_label_image_to_instances():
    labels = np.zeros((6, 7), np.int32)
    labels[1:3, 1:3] = 4
    labels[4:6, 2:5] = 9
    instances = label_image_to_instances(labels)
    assert instances.image_size == (6, 7)
    assert (
        tuple(instances.pred_masks.shape) == (2, 6, 7) and instances.pred_masks.dtype == torch.bool
    )
    assert instances.pred_masks[0].sum() == 4 and instances.pred_masks[1].sum() == 6
    assert instances.scores.tolist() == [1.0, 1.0]


def test_scored_through_the_nuclei_evaluator(tmp_path):
    """On the synthetic val split (via its semantic twin's name): per-image numbers are those of
    image_nuclei_stats on the recipe's labels, and the files follow train_net.py's layout."""
    results = evaluate_classical_baseline("nuclei_synth_sem_seg_val", str(tmp_path))
    records = DatasetCatalog.get("nuclei_synth_val")
    assert results["nuclei"]["num_images"] == len(records) == 16
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["results"]["nuclei_synth_val"]["nuclei"] == pytest.approx(results["nuclei"])
    per_image = json.loads(
        (tmp_path / "inference" / "nuclei_synth_val" / "nuclei_per_image.json").read_text()
    )
    assert [p["image_id"] for p in per_image] == [r["image_id"] for r in records]
    record = records[0]
    truth = coco_segmentations_to_label_image(
        [a["segmentation"] for a in record["annotations"]], record["height"], record["width"]
    )
    expected = image_nuclei_stats(truth, otsu_watershed_labels(read_image_rgb(record["file_name"])))
    assert per_image[0]["dsb_score"] == pytest.approx(expected["dsb_score"])
    assert per_image[0]["iou"] == pytest.approx(expected["iou"])
    assert np.mean([p["dsb_score"] for p in per_image]) == pytest.approx(
        results["nuclei"]["dsb_score"]
    )
