"""
Nuclei metrics (maskrcnnpp/evaluation/nuclei_metrics.py) and NucleiEvaluator.

Hand-computed cases first (the arithmetic is in the comments), then a comparison with an
independent brute-force implementation (per-pair boolean masks, exact fractions) on random
label images.
"""

import os
from fractions import Fraction

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from maskrcnnpp.evaluation import NucleiEvaluator, image_nuclei_stats, summarize_nuclei_stats
from maskrcnnpp.structures.label_image import masks_to_label_image, semantic_to_label_image
from maskrcnnpp.structures.rle import coco_segmentation_to_rle, decode_coco_segmentation

METRICS = ("iou", "dice", "dsb_score", "aji", "pq")


def rect(labels, label, rows, cols):
    """Paint rows[0]..rows[1] x cols[0]..cols[1] (inclusive) with label."""
    labels[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = label
    return labels


def assert_metrics(stats, **expected):
    for name, value in expected.items():
        assert stats[name] == pytest.approx(value, abs=1e-12), name


def two_nuclei():
    # A: rows 1-3 x cols 1-3 = 9 px; B: rows 5-8 x cols 5-8 = 16 px.
    gt = np.zeros((10, 10), np.int32)
    rect(gt, 1, (1, 3), (1, 3))
    rect(gt, 2, (5, 8), (5, 8))
    return gt


# ------------------------------------------------------------------------------------------------
# Hand-computed cases
# ------------------------------------------------------------------------------------------------


def test_perfect_prediction():
    gt = two_nuclei()
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))  # same nuclei, other label values
    stats = image_nuclei_stats(gt, pred)
    assert_metrics(stats, iou=1, dice=1, dsb_score=1, aji=1, pq=1)
    assert (stats["num_gt"], stats["num_pred"], stats["num_matched"]) == (2, 2, 2)
    assert stats["fg_intersection"] == stats["fg_union"] == 25


def test_empty_prediction():
    # Foreground: 0 / 25. DSB: TP 0, FN 2 -> 0. AJI: C 0, U 9 + 16. PQ: 0 / (0 + 2/2).
    stats = image_nuclei_stats(two_nuclei(), np.zeros((10, 10), np.int32))
    assert_metrics(stats, iou=0, dice=0, dsb_score=0, aji=0, pq=0)
    assert (stats["num_gt"], stats["num_pred"]) == (2, 0)


def test_one_nucleus_missing():
    gt = two_nuclei()
    pred = np.where(gt == 1, 1, 0)  # A found exactly, B missed
    stats = image_nuclei_stats(gt, pred)
    # IoU 9 / 25; Dice 2*9 / (25 + 9) = 9/17.
    # DSB: every t: TP 1, FP 0, FN 1 -> 1/2.
    # AJI: A with A': C 9, U 9; B overlaps nothing: U += 16 -> 9 / 25.
    # PQ: SQ 1, RQ 1 / (1 + 0/2 + 1/2) = 2/3.
    assert_metrics(stats, iou=9 / 25, dice=9 / 17, dsb_score=0.5, aji=9 / 25, pq=2 / 3)
    assert stats["num_matched"] == 1


def test_one_nucleus_split_in_two():
    # G: rows 2-5 x cols 2-5 = 16 px; P1: cols 2-4 = 12 px, P2: col 5 = 4 px.
    gt = rect(np.zeros((8, 8), np.int32), 1, (2, 5), (2, 5))
    pred = np.zeros((8, 8), np.int32)
    rect(pred, 1, (2, 5), (2, 4))
    rect(pred, 2, (2, 5), (5, 5))
    stats = image_nuclei_stats(gt, pred)
    # Foreground identical: IoU 1, Dice 1.
    # IoU(G, P1) = 12/16 = 0.75 > t for t = .50 .55 .60 .65 .70 (not for .75: strict):
    #   TP 1, FP 1, FN 0 -> 1/2 at 5 thresholds, TP 0, FP 2, FN 1 -> 0 at the other 5:
    #   DSB = 5 * 0.5 / 10 = 0.25.
    # AJI: G with P1: C 12, U 16; P2 unused: U += 4 -> 12/20 = 0.6.
    # PQ: SQ 0.75, RQ 1 / (1 + 1/2 + 0) = 2/3 -> 0.5.
    assert_metrics(stats, iou=1, dice=1, dsb_score=0.25, aji=0.6, pq=0.5)


def test_split_into_halves_is_no_match():
    # Halves of 8 px each: IoU exactly 0.5, which is not > 0.5 -> no match anywhere.
    gt = rect(np.zeros((8, 8), np.int32), 1, (2, 5), (2, 5))
    pred = np.zeros((8, 8), np.int32)
    rect(pred, 1, (2, 5), (2, 3))
    rect(pred, 2, (2, 5), (4, 5))
    stats = image_nuclei_stats(gt, pred)
    # AJI: tie 0.5 / 0.5 goes to the lower label P1: C 8, U 16; P2 unused: U += 8 -> 1/3.
    assert_metrics(stats, iou=1, dice=1, dsb_score=0, aji=1 / 3, pq=0)
    assert stats["num_matched"] == 0


def test_two_nuclei_merged_into_one():
    # A: rows 2-5 x cols 1-5 = 20 px; B: rows 2-5 x cols 7-8 = 8 px;
    # P: rows 2-5 x cols 1-8 = 32 px (covers A, B and the 4 px gap at col 6).
    gt = np.zeros((8, 10), np.int32)
    rect(gt, 1, (2, 5), (1, 5))
    rect(gt, 2, (2, 5), (7, 8))
    pred = rect(np.zeros((8, 10), np.int32), 1, (2, 5), (1, 8))
    stats = image_nuclei_stats(gt, pred)
    # Foreground: inter 28, union 32 -> 0.875; Dice 56 / (28 + 32) = 14/15.
    # IoU(A, P) = 20/32 = 0.625 > t for t = .50 .55 .60: TP 1, FP 0, FN 1 -> 1/2;
    #   else TP 0, FP 1, FN 2 -> 0. DSB = 3 * 0.5 / 10 = 0.15.
    # AJI: A -> P: C 20, U 32; B -> P (IoU 8/32): C += 8, U += 32 -> 28 / 64 = 7/16.
    # PQ: SQ 0.625, RQ 1 / (1 + 0 + 1/2) = 2/3 -> 5/12.
    assert_metrics(stats, iou=0.875, dice=14 / 15, dsb_score=0.15, aji=7 / 16, pq=5 / 12)


def test_dsb_threshold_boundary_is_strict():
    # G 20 px, P an 11 px part of it: IoU 11/20 = 0.55 exactly -> matched only at t = 0.50.
    gt = rect(np.zeros((6, 6), np.int32), 1, (0, 3), (0, 4))  # 4 x 5 = 20 px
    pred = np.zeros((6, 6), np.int32)
    pred[0:2, 0:5] = 1  # 10 px
    pred[2, 0] = 1  # + 1 px = 11 px
    stats = image_nuclei_stats(gt, pred)
    # DSB: t = .50: TP 1 -> 1; t >= .55: TP 0, FP 1, FN 1 -> 0. Mean 0.1. PQ: 0.55 * 1.
    assert_metrics(stats, dsb_score=0.1, pq=0.55, aji=0.55, iou=0.55)


def test_overlapping_predictions_score_decides():
    # m1: rows 2-5 x cols 2-5 (16 px), m2: rows 2-5 x cols 4-7 (16 px); they share cols 4-5.
    m1 = rect(np.zeros((8, 10), np.int32), 1, (2, 5), (2, 5)) > 0
    m2 = rect(np.zeros((8, 10), np.int32), 1, (2, 5), (4, 7)) > 0
    masks = np.stack([m1, m2])

    labels = masks_to_label_image(masks, np.array([0.9, 0.6]))  # m1 keeps cols 4-5
    expected = np.zeros((8, 10), np.int32)
    rect(expected, 1, (2, 5), (2, 5))
    rect(expected, 2, (2, 5), (6, 7))
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int32

    labels_swapped = masks_to_label_image(masks, np.array([0.6, 0.9]))  # m2 keeps them
    expected_swapped = np.zeros((8, 10), np.int32)
    rect(expected_swapped, 1, (2, 5), (4, 7))  # the stronger instance is label 1
    rect(expected_swapped, 2, (2, 5), (2, 3))
    np.testing.assert_array_equal(labels_swapped, expected_swapped)

    # Ground truth A = cols 2-5 (16 px), B = cols 6-7 (8 px).
    gt = np.zeros((8, 10), np.int32)
    rect(gt, 1, (2, 5), (2, 5))
    rect(gt, 2, (2, 5), (6, 7))
    assert_metrics(image_nuclei_stats(gt, labels), iou=1, dice=1, dsb_score=1, aji=1, pq=1)
    # Swapped: P1 = cols 4-7 (16), P2 = cols 2-3 (8). IoU(A,P1) = 8/24, IoU(A,P2) = 8/16,
    # IoU(B,P1) = 8/16, IoU(B,P2) = 0: nothing > 0.5 -> DSB 0, PQ 0.
    # AJI: A -> P2: C 8, U 16; B -> P1: C 8, U 16 -> 16/32 = 0.5.
    stats = image_nuclei_stats(gt, labels_swapped)
    assert_metrics(stats, iou=1, dice=1, dsb_score=0, aji=0.5, pq=0)


def test_masks_to_label_image_drops_hidden_and_empty_instances():
    big = rect(np.zeros((6, 6), np.int32), 1, (0, 4), (0, 4)) > 0
    small = rect(np.zeros((6, 6), np.int32), 1, (1, 2), (1, 2)) > 0
    empty = np.zeros((6, 6), bool)
    corner = rect(np.zeros((6, 6), np.int32), 1, (5, 5), (5, 5)) > 0
    labels = masks_to_label_image(np.stack([small, empty, big, corner]), [0.3, 0.99, 0.8, 0.1])
    # empty: no pixel; small: hidden under big -> dropped. big = 1, corner = 2.
    expected = np.zeros((6, 6), np.int32)
    expected[big] = 1
    expected[corner] = 2
    np.testing.assert_array_equal(labels, expected)
    # No scores: the first listed wins, so small survives inside big.
    labels = masks_to_label_image(np.stack([small, big]))
    assert labels[1, 1] == 1 and labels[0, 0] == 2 and labels.max() == 2
    assert masks_to_label_image(np.zeros((0, 3, 4), bool)).shape == (3, 4)


def test_image_without_nuclei():
    empty = np.zeros((5, 5), np.int32)
    # No GT, no prediction: every metric 1 by convention.
    assert_metrics(image_nuclei_stats(empty, empty), iou=1, dice=1, dsb_score=1, aji=1, pq=1)
    # No GT, one 4 px false positive: IoU 0/4, Dice 0/4, DSB FP 1 -> 0, AJI 0/4, PQ 0.
    pred = rect(empty.copy(), 1, (1, 2), (1, 2))
    stats = image_nuclei_stats(empty, pred)
    assert_metrics(stats, iou=0, dice=0, dsb_score=0, aji=0, pq=0)
    assert (stats["num_gt"], stats["num_pred"], stats["fg_union"]) == (0, 1, 4)


def test_summary_means_and_pooled_numbers():
    gt = two_nuclei()
    missing = image_nuclei_stats(gt, np.where(gt == 1, 1, 0))  # IoU 9/25, Dice 9/17, DSB 0.5
    empty = image_nuclei_stats(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32))  # all 1
    summary = summarize_nuclei_stats([missing, empty])
    assert set(summary) == {
        "iou",
        "dice",
        "iou_pooled",
        "dice_pooled",
        "dsb_score",
        "aji",
        "pq",
        "accuracy_iou50_pooled",
        "num_images",
    }
    # Means: (9/25 + 1)/2, (9/17 + 1)/2, (0.5 + 1)/2, (9/25 + 1)/2, (2/3 + 1)/2.
    # Pooled: the empty image adds nothing: 9/25 and 2*9/(25 + 9).
    assert summary["num_images"] == 2
    assert summary["iou"] == pytest.approx((9 / 25 + 1) / 2)
    assert summary["dice"] == pytest.approx((9 / 17 + 1) / 2)
    assert summary["iou_pooled"] == pytest.approx(9 / 25)
    assert summary["dice_pooled"] == pytest.approx(18 / 34)
    assert summary["dsb_score"] == pytest.approx(0.75)
    assert summary["aji"] == pytest.approx((9 / 25 + 1) / 2)
    assert summary["pq"] == pytest.approx((2 / 3 + 1) / 2)
    # TP / (TP + FP + FN) summed: one of two true nuclei found, nothing false: 1 / (1 + 0 + 1)
    assert summary["accuracy_iou50_pooled"] == pytest.approx(0.5)
    empty_summary = summarize_nuclei_stats([])
    assert empty_summary["num_images"] == 0 and np.isnan(empty_summary["dsb_score"])


def test_semantic_to_label_image_uses_8_connectivity():
    fg = np.zeros((6, 6), bool)
    fg[0, 0] = fg[1, 1] = True  # diagonal neighbours: one component
    fg[4:6, 4:6] = True  # a separate block
    labels = semantic_to_label_image(fg)
    assert labels.dtype == np.int32
    assert labels[0, 0] == labels[1, 1] == 1
    assert labels[4, 4] == 2 and labels.max() == 2 and (labels > 0).sum() == 6


def test_bad_label_images_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        image_nuclei_stats(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="bool mask"):
        image_nuclei_stats(np.zeros((4, 4), bool), np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="negative"):
        image_nuclei_stats(np.full((4, 4), -1), np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="scores must have shape"):
        masks_to_label_image(np.zeros((2, 4, 4), bool), [0.5])


def test_coco_segmentation_formats_decode_alike():
    mask = rect(np.zeros((7, 9), np.int32), 1, (2, 4), (3, 7)) > 0
    compressed = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_str = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    # Uncompressed RLE: column-major runs, starting with background.
    flat = mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    uncompressed = {"size": [7, 9], "counts": counts}
    # Polygon along the outer pixel edges of cols 3-7, rows 2-4.
    polygon = [[3, 2, 8, 2, 8, 5, 3, 5]]
    for segmentation in (compressed, as_str, uncompressed, polygon):
        np.testing.assert_array_equal(decode_coco_segmentation(segmentation, 7, 9), mask)
    assert isinstance(coco_segmentation_to_rle(compressed, 7, 9)["counts"], str)
    with pytest.raises(ValueError, match="does not match the image size"):
        decode_coco_segmentation(as_str, 8, 9)
    with pytest.raises(ValueError, match="polygon"):
        decode_coco_segmentation([[1, 2, 3]], 7, 9)


# ------------------------------------------------------------------------------------------------
# Independent brute-force implementation (per-pair boolean masks, exact fractions)
# ------------------------------------------------------------------------------------------------


def brute_force_stats(gt, pred):
    gt_masks = [gt == v for v in np.unique(gt) if v != 0]
    pred_masks = [pred == v for v in np.unique(pred) if v != 0]
    n_gt, n_pred = len(gt_masks), len(pred_masks)
    inter = [[int(np.logical_and(g, p).sum()) for p in pred_masks] for g in gt_masks]
    union = [[int(np.logical_or(g, p).sum()) for p in pred_masks] for g in gt_masks]
    iou = [[Fraction(inter[i][j], union[i][j]) for j in range(n_pred)] for i in range(n_gt)]

    gt_fg, pred_fg = gt > 0, pred > 0
    fg_inter = int((gt_fg & pred_fg).sum())
    fg_union = int((gt_fg | pred_fg).sum())
    fg_sum = int(gt_fg.sum() + pred_fg.sum())
    out = {
        "iou": Fraction(fg_inter, fg_union) if fg_union else Fraction(1),
        "dice": Fraction(2 * fg_inter, fg_sum) if fg_sum else Fraction(1),
    }

    # DSB: at each t, the pairs with IoU > t; non-overlapping nuclei make them one-to-one
    # (checked here rather than assumed).
    scores = []
    for k in range(10, 20):
        t = Fraction(k, 20)
        pairs = [(i, j) for i in range(n_gt) for j in range(n_pred) if iou[i][j] > t]
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        tp = len(pairs)
        fp, fn = n_pred - tp, n_gt - tp
        scores.append(Fraction(tp, tp + fp + fn) if tp + fp + fn else Fraction(1))
    out["dsb_score"] = sum(scores) / len(scores)

    # PQ at 0.5.
    matches = [iou[i][j] for i in range(n_gt) for j in range(n_pred) if iou[i][j] > Fraction(1, 2)]
    tp = len(matches)
    denominator = tp + Fraction(n_pred - tp, 2) + Fraction(n_gt - tp, 2)
    out["pq"] = sum(matches, Fraction(0)) / denominator if denominator else Fraction(1)

    # AJI, Kumar et al.: best-IoU prediction per true nucleus (first on ties); a true nucleus
    # with no overlap adds its own area; unused predictions add theirs.
    c_sum, u_sum, used = 0, 0, set()
    for i, g in enumerate(gt_masks):
        best_j, best_iou = None, Fraction(0)
        for j in range(n_pred):
            if iou[i][j] > best_iou:
                best_j, best_iou = j, iou[i][j]
        if best_j is None:
            u_sum += int(g.sum())
        else:
            c_sum += inter[i][best_j]
            u_sum += union[i][best_j]
            used.add(best_j)
    u_sum += sum(int(p.sum()) for j, p in enumerate(pred_masks) if j not in used)
    out["aji"] = Fraction(c_sum, u_sum) if u_sum else Fraction(1)
    return out


def random_label_image(rng, shape, num):
    labels = np.zeros(shape, np.int32)
    for _ in range(num):
        center = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        value = int(rng.integers(1, 1000))  # labels need not be consecutive
        cv2.ellipse(labels, center, axes, float(rng.uniform(0, 180)), 0, 360, value, -1)
    return labels


def degrade(rng, gt):
    """A prediction derived from gt: shifted, dropped, merged, eroded nuclei plus extras."""
    pred = np.zeros_like(gt)
    values = [v for v in np.unique(gt) if v != 0]
    for v in values:
        mask = (gt == v).astype(np.uint8)
        roll = rng.random()
        if roll < 0.15:
            continue  # missed
        if roll < 0.35:
            mask = np.roll(mask, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
        elif roll < 0.5:
            mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        elif roll < 0.6:
            mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
        label = int(rng.choice(values)) if rng.random() < 0.1 else v + 2000  # merge sometimes
        pred[mask > 0] = label
    extra = random_label_image(rng, gt.shape, int(rng.integers(0, 3)))
    pred[(extra > 0) & (pred == 0)] = extra[(extra > 0) & (pred == 0)] + 5000
    return pred


def test_matches_brute_force_on_random_label_images():
    rng = np.random.default_rng(2018)
    for case in range(40):
        shape = (int(rng.integers(12, 40)), int(rng.integers(12, 40)))
        gt = random_label_image(rng, shape, int(rng.integers(0, 12)))
        if case % 5 == 4:
            pred = random_label_image(rng, shape, int(rng.integers(0, 12)))  # unrelated
        else:
            pred = degrade(rng, gt)
        stats = image_nuclei_stats(gt, pred)
        expected = brute_force_stats(gt, pred)
        for name in METRICS:
            assert stats[name] == pytest.approx(float(expected[name]), abs=1e-12), (case, name)


def test_masks_to_label_image_matches_painting_by_score():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 15))
        masks = np.stack([random_label_image(rng, (20, 24), 1) > 0 for _ in range(n)])
        scores = rng.choice([0.2, 0.5, 0.9], size=n)  # ties: the earlier mask wins
        order = sorted(range(n), key=lambda i: (-scores[i], i))  # strongest first
        canvas = np.zeros((20, 24), np.int32)
        for i in reversed(order):  # paint weakest first, strongest last
            canvas[masks[i]] = i + 1
        survivors = [i for i in order if (canvas == i + 1).any()]
        expected = np.zeros_like(canvas)
        for new_label, i in enumerate(survivors, start=1):
            expected[canvas == i + 1] = new_label
        np.testing.assert_array_equal(masks_to_label_image(masks, scores), expected)


# ------------------------------------------------------------------------------------------------
# NucleiEvaluator
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two 16 x 20 images: image 1 has nuclei A, B (RLE and polygon); image 2 has none."""
    name = f"_test_nuclei_eval_{os.getpid()}_{id(tmp_path)}"
    height, width = 16, 20
    paths = []
    for index in range(2):
        path = str(tmp_path / f"img{index}.png")
        cv2.imwrite(path, np.full((height, width, 3), 40 + 100 * index, np.uint8))
        paths.append(path)
    a = rect(np.zeros((height, width), np.int32), 1, (2, 5), (2, 5)) > 0  # 16 px
    rle_a = mask_util.encode(np.asfortranarray(a.astype(np.uint8)))
    rle_a["counts"] = rle_a["counts"].decode()
    b_polygon = [[10, 8, 16, 8, 16, 12, 10, 12]]  # rows 8-11 x cols 10-15 = 24 px
    records = [
        {
            "file_name": paths[0],
            "image_id": 1,
            "height": height,
            "width": width,
            "annotations": [
                {"segmentation": rle_a, "category_id": 0},
                {"segmentation": b_polygon, "category_id": 0},
            ],
        },
        {"file_name": paths[1], "image_id": 2, "height": height, "width": width},
    ]
    DatasetCatalog.register(name, lambda: records)
    gt_b = decode_coco_segmentation(b_polygon, height, width)
    yield name, a, gt_b, (height, width)
    DatasetCatalog.remove(name)


def make_instances(masks, scores, image_size):
    instances = Instances(image_size)
    instances.pred_masks = torch.as_tensor(
        np.stack(masks) if masks else np.zeros((0,) + image_size, bool)
    )
    instances.scores = torch.tensor(scores, dtype=torch.float32)
    return instances


def test_evaluator_instances_and_worst_images(tiny_dataset, tmp_path):
    name, a, b, size = tiny_dataset
    out_dir = tmp_path / "eval"
    evaluator = NucleiEvaluator(name, score_thresh=0.5, output_dir=str(out_dir), num_vis=1)
    evaluator.reset()
    # Image 1: A found (0.9), B found only with score 0.3 (dropped by the threshold), an
    # overlapping weaker copy of A (0.8) that loses every pixel to A.
    evaluator.process(
        [{"image_id": 1}], [{"instances": make_instances([a, b, a], [0.9, 0.3, 0.8], size)}]
    )
    # Image 2 (no nuclei): nothing predicted.
    evaluator.process([{"image_id": 2}], [{"instances": make_instances([], [], size)}])
    results = evaluator.evaluate()
    nuclei = results["nuclei"]
    area_b = int(b.sum())
    assert area_b == 24
    # Image 1 = "one nucleus missing": IoU 16/(16+B), DSB 0.5, PQ 2/3; image 2: all 1.
    assert nuclei["num_images"] == 2
    assert nuclei["iou"] == pytest.approx((16 / (16 + area_b) + 1) / 2)
    assert nuclei["iou_pooled"] == pytest.approx(16 / (16 + area_b))
    assert nuclei["dsb_score"] == pytest.approx(0.75)
    assert nuclei["pq"] == pytest.approx((2 / 3 + 1) / 2)
    pictures = sorted(os.listdir(out_dir / "worst_images"))
    assert pictures == ["000_1.png"]  # the worst image is image 1
    picture = cv2.imread(str(out_dir / "worst_images" / pictures[0]))
    assert picture.shape[1] == 3 * size[1] + 8 and picture.shape[0] > size[0]
    assert (out_dir / "nuclei_per_image.json").exists()


def test_evaluator_semantic_output(tiny_dataset):
    name, a, b, size = tiny_dataset
    evaluator = NucleiEvaluator(name)
    evaluator.reset()
    # Two-class logits: foreground = A and B exactly -> two components = a perfect prediction.
    logits = torch.zeros((2,) + size)
    logits[1][torch.as_tensor(a | b)] = 5.0
    evaluator.process([{"image_id": 1}], [{"sem_seg": logits}])
    results = evaluator.evaluate()
    assert results["nuclei"]["dsb_score"] == 1.0 and results["nuclei"]["aji"] == 1.0


def test_evaluator_semantic_twin_takes_ground_truth_from_instance_dataset(tiny_dataset, tmp_path):
    name, a, b, size = tiny_dataset
    sem_name = name + "_sem_seg"
    sem_records = [
        {k: v for k, v in r.items() if k != "annotations"} for r in DatasetCatalog.get(name)
    ]
    for record in sem_records:
        record["sem_seg_file_name"] = str(tmp_path / "unused.png")
    DatasetCatalog.register(sem_name, lambda: sem_records)
    try:
        with pytest.raises(ValueError, match="instance_dataset_name"):
            NucleiEvaluator(sem_name)  # no twin named: no instance ground truth
        MetadataCatalog.get(sem_name).set(instance_dataset_name=name)
        evaluator = NucleiEvaluator(sem_name)
        evaluator.reset()
        logits = torch.zeros((2,) + size)
        logits[1][torch.as_tensor(a)] = 1.0  # A only: "one nucleus missing"
        evaluator.process([{"image_id": 1}], [{"sem_seg": logits}])
        assert evaluator.evaluate()["nuclei"]["dsb_score"] == pytest.approx(0.5)
    finally:
        DatasetCatalog.remove(sem_name)
        MetadataCatalog.remove(sem_name)


def test_evaluator_rejects_unknown_image(tiny_dataset):
    name, _, _, size = tiny_dataset
    evaluator = NucleiEvaluator(name)
    with pytest.raises(KeyError, match="image_id 99"):
        evaluator.process([{"image_id": 99}], [{"instances": make_instances([], [], size)}])
