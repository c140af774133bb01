"""
Touching nuclei as three classes, and back: the ``"interior_boundary"`` target of the semantic
UNet++ (``MODEL.UNETPP.TARGET``).

A semantic network that predicts only nucleus / background cannot separate two nuclei that
touch: their masks form one connected blob. Here every nucleus pixel that has a pixel of
another label (background or another nucleus) among its 8 neighbours is a *boundary* pixel,
the rest of the nucleus its *interior*. Interiors of touching nuclei are then apart, so after
prediction each interior component seeds one nucleus, which then grows back through the
predicted foreground around it, never across background (:func:`nuclei_from_interior_boundary`).
"""

from typing import Tuple

import cv2
import numpy as np

__all__ = [
    "BACKGROUND",
    "INTERIOR",
    "BOUNDARY",
    "interior_boundary_target",
    "nuclei_from_interior_boundary",
]

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def interior_boundary_target(instance_labels: np.ndarray) -> np.ndarray:
    """
    Args:
        instance_labels (ndarray): (H, W) integer label image, 0 background, 1..K nuclei.

    Returns:
        ndarray: (H, W) uint8, :data:`BACKGROUND` (0) off the nuclei, :data:`BOUNDARY` (2) on
        nucleus pixels with an 8-neighbour of another label (the image border does not count),
        :data:`INTERIOR` (1) on the other nucleus pixels.
    """
    labels = np.asarray(instance_labels)
    if labels.ndim != 2:
        raise ValueError(f"instance labels must have shape (H, W); got {labels.shape}")
    labels = labels.astype(np.int32, copy=False)
    # Within a 3x3 window a pixel's label differs from a neighbour's iff the window's max or
    # min differs from it; border pixels repeat their own value (BORDER_REPLICATE).
    kernel = np.ones((3, 3), np.uint8)
    as_float = labels.astype(np.float32)  # exact for labels < 2**24
    window_max = cv2.dilate(as_float, kernel, borderType=cv2.BORDER_REPLICATE)
    window_min = cv2.erode(as_float, kernel, borderType=cv2.BORDER_REPLICATE)
    nucleus = labels > 0
    edge = (window_max != as_float) | (window_min != as_float)
    target = np.zeros(labels.shape, np.uint8)
    target[nucleus] = INTERIOR
    target[nucleus & edge] = BOUNDARY
    return target


def nuclei_from_interior_boundary(
    probabilities: np.ndarray, *, min_seed_area: int = 4, max_growth: int = 64
) -> Tuple[np.ndarray, np.ndarray]:
    """
    Nuclei from the class probabilities of an ``"interior_boundary"`` model.

    1. Foreground: pixels where ``p(background) < 0.5``.
    2. Seeds: 8-connected components of ``p(interior) >= 0.5`` inside the foreground, with at
       least ``min_seed_area`` pixels.
    3. The seeds grow into the foreground one pixel ring at a time (8-connected, never across
       the background), for at most ``max_growth`` rings: each foreground pixel joins the
       seed nearest to it along the foreground (chessboard distance; a pixel reached by two
       seeds in the same ring joins the higher label).
    4. Foreground no seed reached (nuclei too small to keep an interior) becomes one nucleus
       per 8-connected component.
    5. A nucleus's score is the mean of ``1 - p(background)`` over its pixels.

    Args:
        probabilities (ndarray): (3, H, W) float probabilities of background, interior,
            boundary.
        min_seed_area (int): smaller interior components are not seeds (noise).
        max_growth (int): rings a seed may grow.

    Returns:
        (labels, scores): (H, W) int32 label image, 0 background and nuclei 1..K in raster
        order of their first pixel; (K,) float64 scores.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 3 or probabilities.shape[0] != 3:
        raise ValueError(
            f"interior/boundary probabilities must have shape (3, H, W); got {probabilities.shape}"
        )
    foreground = probabilities[BACKGROUND] < 0.5
    seeds_mask = (probabilities[INTERIOR] >= 0.5) & foreground
    num_seeds, labels, stats, _ = cv2.connectedComponentsWithStats(
        seeds_mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    labels[(stats[:, cv2.CC_STAT_AREA] < min_seed_area)[labels]] = 0
    unassigned = foreground & (labels == 0)
    ring = np.ones((3, 3), np.uint8)
    for _ in range(max_growth):
        if not unassigned.any():
            break
        # label of the highest neighbour (exact in float32 for labels below 2**24)
        grown = cv2.dilate(labels.astype(np.float32), ring).astype(np.int32)
        reached = unassigned & (grown > 0)
        if not reached.any():
            break
        labels[reached] = grown[reached]
        unassigned &= ~reached
    if unassigned.any():
        _, orphans = cv2.connectedComponents(
            unassigned.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        labels = np.where(unassigned, orphans + num_seeds, labels)
    labels = _relabel_raster_order(labels)
    num = int(labels.max(initial=0))
    flat = labels.reshape(-1)
    area = np.bincount(flat, minlength=num + 1)[1:]
    nucleus_prob = 1.0 - probabilities[BACKGROUND].reshape(-1).astype(np.float64)
    prob_sum = np.bincount(flat, weights=nucleus_prob, minlength=num + 1)[1:]
    return labels, prob_sum / np.maximum(area, 1)


def _relabel_raster_order(labels: np.ndarray) -> np.ndarray:
    """Labels 1..K numbered by the raster order of their first pixel (0 stays 0)."""
    flat = labels.reshape(-1)
    present, first = np.unique(flat, return_index=True)
    order = np.argsort(first[present > 0], kind="stable")
    relabel = np.zeros(int(present.max(initial=0)) + 1, np.int32)
    relabel[present[present > 0][order]] = np.arange(1, order.size + 1, dtype=np.int32)
    return relabel[labels]
