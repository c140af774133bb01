"""Paint cropped instance masks, gathered from one image or from many tiles, into one label
image, overlaps resolved by score."""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["CroppedMask", "paint_instances", "crop_masks"]


@dataclass
class CroppedMask:
    """One instance: its mask cropped to its tight box, placed in full-image pixels.

    Attributes:
        y0, x0 (int): top-left pixel of the crop in the full image.
        mask (ndarray): (h, w) bool, the instance's pixels inside its box (non-empty).
        score (float): the instance's confidence.
    """

    y0: int
    x0: int
    mask: np.ndarray
    score: float

    @property
    def box(self) -> Tuple[int, int, int, int]:
        """(y0, x0, y1, x1), ends exclusive."""
        return self.y0, self.x0, self.y0 + self.mask.shape[0], self.x0 + self.mask.shape[1]


def crop_masks(masks: np.ndarray, scores: np.ndarray, y_offset=0, x_offset=0) -> List[CroppedMask]:
    """
    Args:
        masks (ndarray): (N, H, W) bool instance masks.
        scores (ndarray): (N,) scores.
        y_offset, x_offset (int): where pixel (0, 0) of ``masks`` lies in the full image.

    Returns:
        list[CroppedMask]: one per non-empty mask, in input order; empty masks are dropped.
    """
    crops = []
    rows_hit = masks.any(axis=2)  # (N, H)
    columns_hit = masks.any(axis=1)  # (N, W)
    for index in range(masks.shape[0]):
        rows = np.flatnonzero(rows_hit[index])
        if rows.size == 0:
            continue
        columns = np.flatnonzero(columns_hit[index])
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
        crops.append(
            CroppedMask(
                int(y0 + y_offset),
                int(x0 + x_offset),
                np.ascontiguousarray(masks[index, y0:y1, x0:x1]),
                float(scores[index]),
            )
        )
    return crops


def paint_instances(height: int, width: int, instances: Sequence[CroppedMask]):
    """
    Args:
        height, width (int): size of the full image.
        instances (list[CroppedMask]): instances inside the image, possibly overlapping.

    Returns:
        (ndarray, ndarray): the (H, W) int32 label image (0 background, 1..K) and the (K,)
        float64 scores, ``scores[k - 1]`` that of label ``k``. A pixel covered by several
        instances goes to the highest score (ties: the first listed); labels are numbered by
        decreasing score; instances left without a pixel are dropped. Same result as
        ``maskrcnnpp.evaluation.nuclei_metrics.masks_to_label_image`` on the full-size masks,
        without ever holding (N, H, W) masks.
    """
    labels = np.zeros((height, width), dtype=np.int32)
    order = sorted(range(len(instances)), key=lambda i: -instances[i].score)  # stable
    kept_scores = []
    for index in order:
        instance = instances[index]
        y0, x0, y1, x1 = instance.box
        if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
            raise ValueError(
                f"instance box (y0, x0, y1, x1) = {instance.box} lies outside the "
                f"{height}x{width} image"
            )
        window = labels[y0:y1, x0:x1]
        free = instance.mask & (window == 0)
        if not free.any():
            continue
        kept_scores.append(instance.score)
        window[free] = len(kept_scores)
    return labels, np.asarray(kept_scores, dtype=np.float64)
