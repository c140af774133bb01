"""Cross-tile duplicate suppression: the second half of the tiled keep rule for instance
models.

The core rule of :mod:`maskrcnnpp.inference.tiling` keeps a detection only in the tile whose
core holds its box centre. For a model that predicts a nucleus identically in every tile that
sees it whole, that keeps each nucleus exactly once. A real model does not: two tiles see a
nucleus with different context, so when its centre lies near the boundary of two cores, the
two predictions' centres can fall on either side and both be kept. Those pairs are found
here: detections kept from *different* tiles whose masks overlap with IoU >= a threshold are
one nucleus, and only the higher-scoring one stays. Detections of the same tile are left to
the model's own NMS, so an image predicted whole is unaffected.
"""

from typing import List, Sequence

import numpy as np

from ..structures.instance_painting import CroppedMask

__all__ = ["mask_iou", "suppress_cross_tile_duplicates"]


def mask_iou(a: CroppedMask, b: CroppedMask) -> float:
    """IoU of two cropped masks in full-image coordinates (computed on their boxes' overlap)."""
    ay0, ax0, ay1, ax1 = a.box
    by0, bx0, by1, bx1 = b.box
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    area_a, area_b = int(a.mask.sum()), int(b.mask.sum())
    if y0 >= y1 or x0 >= x1:
        return 0.0
    inter = int(
        (
            a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
            & b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        ).sum()
    )
    return inter / float(area_a + area_b - inter)


def suppress_cross_tile_duplicates(
    instances: Sequence[CroppedMask], tile_ids: Sequence[int], iou_thresh: float
) -> List[CroppedMask]:
    """
    Args:
        instances (list[CroppedMask]): detections kept by the core rule, from all tiles.
        tile_ids (list[int]): the tile each came from.
        iou_thresh (float): mask IoU at or above which two detections of different tiles are
            the same nucleus; > 1 turns the suppression off.

    Returns:
        list[CroppedMask]: the detections left, in input order: visiting them by decreasing
        score (ties: input order), one is dropped when it overlaps an already kept detection of
        another tile with IoU >= ``iou_thresh``.
    """
    if iou_thresh > 1 or len(set(tile_ids)) < 2:
        return list(instances)
    boxes = np.array([inst.box for inst in instances], dtype=np.int64).reshape(-1, 4)
    tiles = np.asarray(tile_ids)
    order = sorted(range(len(instances)), key=lambda i: -instances[i].score)
    kept = np.zeros(len(instances), bool)
    for index in order:
        y0, x0, y1, x1 = boxes[index]
        candidates = np.flatnonzero(
            kept
            & (tiles != tiles[index])
            & (boxes[:, 0] < y1)
            & (boxes[:, 2] > y0)
            & (boxes[:, 1] < x1)
            & (boxes[:, 3] > x0)
        )
        if not any(mask_iou(instances[index], instances[c]) >= iou_thresh for c in candidates):
            kept[index] = True
    return [inst for inst, keep in zip(instances, kept) if keep]
