"""
Nuclei segmentation metrics (docs/design.md section 11), pure numpy / OpenCV / pycocotools.

Every metric is computed from two *label images* of the same size, ``(H, W)`` integer arrays
where 0 is background and each positive value marks one nucleus:

- foreground IoU and Dice (the union of all instances against the union of all instances),
- DSB score, the 2018 Data Science Bowl metric: for t in 0.50, 0.55, ..., 0.95, predicted and
  true nuclei are matched one-to-one when IoU > t (strictly), the image scores
  ``TP / (TP + FP + FN)`` at t, and the image's score is the mean over the ten thresholds,
- AJI, aggregated Jaccard index (Kumar et al., IEEE TMI 2017),
- PQ, panoptic quality at IoU 0.5 (Kirillov et al., CVPR 2019): ``SQ x RQ``.

Label images hold non-overlapping instances by construction. Overlapping predicted masks are
turned into one with :func:`~maskrcnnpp.structures.label_image.masks_to_label_image` (a
contested pixel goes to the instance with the higher score), semantic foreground masks with
:func:`~maskrcnnpp.structures.label_image.semantic_to_label_image` (connected components,
8-connectivity).

Why one-to-one matching needs no assignment solver: nuclei of one label image are disjoint,
so IoU(g, p) > 0.5 implies |g ∩ p| > |g ∪ p| / 2 >= |g| / 2 and likewise > |p| / 2; two
disjoint predictions cannot both cover more than half of g, nor two true nuclei more than
half of p. Every pair with IoU > 0.5 is therefore a unique match, at every t >= 0.5.

Conventions for empty images (no true and no predicted nucleus): every metric is 1 — IoU and
Dice of two empty foregrounds, the DSB score (as Kaggle scored it), AJI and PQ. When only one
side is empty, every metric is 0.

AJI follows Kumar et al.: each true nucleus G_i is paired with the predicted nucleus S_j of
highest IoU with it (ties: the lowest predicted label, i.e. the highest score when labels come
from :func:`~maskrcnnpp.structures.label_image.masks_to_label_image`); ``C += |G_i ∩ S_j|``, ``U += |G_i ∪ S_j|``; a predicted
nucleus may serve several true ones. A true nucleus that overlaps no prediction adds ``|G_i|``
to U only (the paper's pseudo-code would pair it with an arbitrary prediction of IoU 0; we
follow the usual reading instead). Finally every predicted nucleus never paired adds its area
to U. ``AJI = C / U``.

Pooled numbers (over a split) sum intersections and unions over images before dividing:
``iou_pooled = sum |G ∩ P| / sum |G ∪ P|``, ``dice_pooled = 2 sum |G ∩ P| / sum (|G| + |P|)``
with G, P the foregrounds. ``accuracy_iou50_pooled = sum TP / sum (TP + FP + FN)`` at IoU > 0.5
(the "accuracy" StarDist and Cellpose report), with TP the matched pairs of every image.
"""

import numpy as np

__all__ = [
    "DSB_IOU_THRESHOLDS",
    "NUCLEI_METRIC_NAMES",
    "image_nuclei_stats",
    "summarize_nuclei_stats",
]

# The DSB thresholds are k / 20 for k = 10..19; kept as integers so that "IoU > t" is decided
# exactly in integer arithmetic (20 * |inter| > k * |union|), free of float rounding.
_DSB_THRESHOLD_NUMERATORS = np.arange(10, 20)
_DSB_THRESHOLD_DENOMINATOR = 20
DSB_IOU_THRESHOLDS = tuple(float(k) / _DSB_THRESHOLD_DENOMINATOR for k in _DSB_THRESHOLD_NUMERATORS)

# Keys of summarize_nuclei_stats' result (besides "num_images"), all fractions in [0, 1].
NUCLEI_METRIC_NAMES = (
    "iou",
    "dice",
    "iou_pooled",
    "dice_pooled",
    "dsb_score",
    "aji",
    "pq",
    "accuracy_iou50_pooled",
)


def _relabel_consecutive(labels):
    """
    Args:
        labels (ndarray): (H, W) non-negative integer label image.

    Returns:
        (ndarray, int): the (H*W,) int64 label image with labels renumbered 1..K in increasing
        order of the old labels (background stays 0), and K.
    """
    flat = labels.reshape(-1).astype(np.int64, copy=False)
    if flat.size == 0:
        return flat, 0
    present = np.flatnonzero(np.bincount(flat))
    present = present[present > 0]
    num_labels = int(present.size)
    if num_labels == 0 or present[-1] == num_labels:  # already 1..K
        return flat, num_labels
    old_to_new = np.zeros(int(present[-1]) + 1, dtype=np.int64)
    old_to_new[present] = np.arange(1, num_labels + 1)
    return old_to_new[flat], num_labels


def _check_label_image(labels, name):
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) label image; got shape {labels.shape}")
    if labels.dtype == bool:
        raise ValueError(
            f"{name} is a bool mask; make a label image with semantic_to_label_image or "
            "masks_to_label_image first"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels; got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} holds negative label {labels.min()}; labels must be >= 0")
    return labels


def _ratio(numerator, denominator):
    """numerator / denominator as a float, 1.0 when both are 0 (two empty sets agree)."""
    if denominator == 0:
        return 1.0
    return float(numerator) / float(denominator)


def image_nuclei_stats(gt_labels, pred_labels):
    """
    Per-image nuclei metrics and the sums that pooled metrics need.

    The IoU of every (true, predicted) pair comes from one contingency table of the two label
    images (``np.bincount`` over ``gt * (P + 1) + pred``), never from per-pair mask operations.

    Args:
        gt_labels (ndarray): (H, W) non-negative integer label image of the true nuclei.
        pred_labels (ndarray): (H, W) non-negative integer label image of the predicted nuclei.
            Labels need not be consecutive.

    Returns:
        dict with
            "iou", "dice", "dsb_score", "aji", "pq" (float): the image's metrics in [0, 1];
            "num_gt", "num_pred" (int): instances in each label image;
            "num_matched" (int): pairs with IoU > 0.5 (PQ's true positives);
            "fg_intersection", "fg_union", "fg_gt_area", "fg_pred_area" (int): pixel counts of
            the foregrounds, for :func:`summarize_nuclei_stats`' pooled IoU / Dice.
    """
    gt_labels = _check_label_image(gt_labels, "gt_labels")
    pred_labels = _check_label_image(pred_labels, "pred_labels")
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(
            f"gt_labels and pred_labels differ in shape: {gt_labels.shape} vs {pred_labels.shape}"
        )
    gt_flat, num_gt = _relabel_consecutive(gt_labels)
    pred_flat, num_pred = _relabel_consecutive(pred_labels)

    # table[g, p]: pixels with true label g and predicted label p (0 = background).
    table = np.bincount(
        gt_flat * (num_pred + 1) + pred_flat, minlength=(num_gt + 1) * (num_pred + 1)
    ).reshape(num_gt + 1, num_pred + 1)
    intersection = table[1:, 1:]  # (G, P)
    gt_area = table[1:, :].sum(axis=1)  # (G,)
    pred_area = table[:, 1:].sum(axis=0)  # (P,)

    # Foreground overlap.
    fg_intersection = int(intersection.sum())
    fg_gt_area = int(gt_area.sum())
    fg_pred_area = int(pred_area.sum())
    fg_union = fg_gt_area + fg_pred_area - fg_intersection

    # Overlapping pairs and their unions.
    pair_gt, pair_pred = np.nonzero(intersection)
    pair_inter = intersection[pair_gt, pair_pred]
    pair_union = gt_area[pair_gt] + pred_area[pair_pred] - pair_inter

    # IoU > 0.5 pairs are the unique matches at every threshold >= 0.5 (module docstring).
    matched = 2 * pair_inter > pair_union
    matched_inter, matched_union = pair_inter[matched], pair_union[matched]
    num_matched = int(matched.sum())

    # DSB score: TP(t) / (TP + FP + FN) = TP / (G + P - TP), mean over t.
    if num_gt + num_pred == 0:
        dsb_score = 1.0
    else:
        tp = (
            _DSB_THRESHOLD_DENOMINATOR * matched_inter[None, :]
            > _DSB_THRESHOLD_NUMERATORS[:, None] * matched_union[None, :]
        ).sum(axis=1)
        dsb_score = float(np.mean(tp / (num_gt + num_pred - tp)))

    # PQ = SQ * RQ = sum(IoU of matches) / (TP + FP / 2 + FN / 2), and TP + FP/2 + FN/2 is
    # (G + P) / 2.
    pq = _ratio(np.sum(matched_inter / matched_union), 0.5 * (num_gt + num_pred))

    # AJI: each true nucleus with its highest-IoU prediction (module docstring).
    if num_gt == 0 or num_pred == 0:
        aji = _ratio(0, fg_gt_area + fg_pred_area)
    else:
        iou = np.zeros((num_gt, num_pred), dtype=np.float64)
        iou[pair_gt, pair_pred] = pair_inter / pair_union
        best_pred = np.argmax(iou, axis=1)  # first maximum: lowest predicted label wins ties
        rows = np.arange(num_gt)
        has_overlap = iou[rows, best_pred] > 0
        best_inter = intersection[rows, best_pred][has_overlap]
        best_union = gt_area[has_overlap] + pred_area[best_pred[has_overlap]] - best_inter
        used = np.zeros(num_pred, dtype=bool)
        used[best_pred[has_overlap]] = True
        aji_inter = int(best_inter.sum())
        aji_union = (
            int(best_union.sum()) + int(gt_area[~has_overlap].sum()) + int(pred_area[~used].sum())
        )
        aji = _ratio(aji_inter, aji_union)

    return {
        "iou": _ratio(fg_intersection, fg_union),
        "dice": _ratio(2 * fg_intersection, fg_gt_area + fg_pred_area),
        "dsb_score": dsb_score,
        "aji": aji,
        "pq": pq,
        "num_gt": num_gt,
        "num_pred": num_pred,
        "num_matched": num_matched,
        "fg_intersection": fg_intersection,
        "fg_union": fg_union,
        "fg_gt_area": fg_gt_area,
        "fg_pred_area": fg_pred_area,
    }


def summarize_nuclei_stats(per_image_stats):
    """
    Combine per-image results of :func:`image_nuclei_stats` over a split.

    Args:
        per_image_stats (list[dict]): one dict per image.

    Returns:
        dict with keys "iou", "dice", "dsb_score", "aji", "pq" (means over images),
        "iou_pooled", "dice_pooled", "accuracy_iou50_pooled" (sums over the split before
        dividing), all fractions in
        [0, 1] (NaN when the list is empty), and "num_images".
    """
    per_image_stats = list(per_image_stats)
    num_images = len(per_image_stats)
    if num_images == 0:
        summary = {name: float("nan") for name in NUCLEI_METRIC_NAMES}
        summary["num_images"] = 0
        return summary

    def mean_of(key):
        return float(np.mean([stats[key] for stats in per_image_stats]))

    def sum_of(key):
        return sum(int(stats[key]) for stats in per_image_stats)

    intersection = sum_of("fg_intersection")
    matched = sum_of("num_matched")
    return {
        "iou": mean_of("iou"),
        "dice": mean_of("dice"),
        "iou_pooled": _ratio(intersection, sum_of("fg_union")),
        "dice_pooled": _ratio(2 * intersection, sum_of("fg_gt_area") + sum_of("fg_pred_area")),
        "dsb_score": mean_of("dsb_score"),
        "aji": mean_of("aji"),
        "pq": mean_of("pq"),
        "accuracy_iou50_pooled": _ratio(matched, sum_of("num_gt") + sum_of("num_pred") - matched),
        "num_images": num_images,
    }
