"""
Label images: ``(H, W)`` integer arrays, 0 the background and each positive value one nucleus,
the form every metric, output file and peer exchange uses. Made here from overlapping
instance masks (a contested pixel goes to the higher score), from a semantic foreground
(connected components), from COCO segmentations; and turned back into Detectron2
``Instances``.
"""

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import Instances

from .rle import coco_segmentation_to_rle

__all__ = [
    "coco_segmentations_to_label_image",
    "label_image_to_instances",
    "masks_to_label_image",
    "semantic_to_label_image",
]


def masks_to_label_image(masks, scores=None):
    """
    Turn possibly overlapping instance masks into one label image.

    Args:
        masks (ndarray): (N, H, W) bool (or 0/1) instance masks.
        scores (ndarray or None): (N,) instance scores. A pixel covered by several masks goes
            to the one with the highest score; ties, and ``scores=None``, go to the instance
            that comes first in ``masks``.

    Returns:
        ndarray: (H, W) int32 label image; 0 is background, 1..K the instances that keep at
        least one pixel, numbered by decreasing score (by order in ``masks`` if no scores).
        Instances left without pixels (empty masks, or covered by stronger ones) are dropped.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W); got shape {masks.shape}")
    num_masks, height, width = masks.shape
    labels = np.zeros(height * width, dtype=np.int32)
    if num_masks == 0:
        return labels.reshape(height, width)
    if masks.dtype != bool:
        masks = masks != 0

    # rank[i]: 0 for the strongest instance, N - 1 for the weakest.
    if scores is None:
        rank = np.arange(num_masks, dtype=np.int64)
    else:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (num_masks,):
            raise ValueError(
                f"scores must have shape ({num_masks},) to match masks {masks.shape}; "
                f"got shape {scores.shape}"
            )
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(num_masks, dtype=np.int64)
        rank[order] = np.arange(num_masks)

    # Each covered pixel keeps the instance of lowest rank. Encode (pixel, rank) as one int64
    # key, sort, and take the first key of every pixel.
    flat = np.flatnonzero(masks.reshape(num_masks, height * width))
    if flat.size == 0:
        return labels.reshape(height, width)
    instance, pixel = np.divmod(flat, height * width)
    keys = np.sort(pixel * num_masks + rank[instance])
    pixel_sorted, rank_sorted = np.divmod(keys, num_masks)
    first = np.ones(keys.size, dtype=bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    winner_pixel, winner_rank = pixel_sorted[first], rank_sorted[first]

    # Number the surviving instances 1..K by rank.
    survives = np.bincount(winner_rank, minlength=num_masks) > 0
    rank_to_label = np.zeros(num_masks, dtype=np.int32)
    rank_to_label[survives] = np.arange(1, int(survives.sum()) + 1, dtype=np.int32)
    labels[winner_pixel] = rank_to_label[winner_rank]
    return labels.reshape(height, width)


def semantic_to_label_image(foreground):
    """
    Split a semantic foreground mask into instances by connected components.

    Args:
        foreground (ndarray): (H, W) bool (or 0/1) foreground mask.

    Returns:
        ndarray: (H, W) int32 label image; every 8-connected foreground component (diagonal
        neighbours join) is one instance, numbered 1..K in raster order of first pixel.
    """
    foreground = np.asarray(foreground)
    if foreground.ndim != 2:
        raise ValueError(f"foreground must have shape (H, W); got shape {foreground.shape}")
    _, labels = cv2.connectedComponents(
        (foreground != 0).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    return labels.astype(np.int32, copy=False)


def coco_segmentations_to_label_image(segmentations, height, width, scores=None):
    """
    Decode several COCO segmentations of one image into a label image.

    Args:
        segmentations (list): COCO segmentations (see :func:`coco_segmentation_to_rle`).
        height, width (int): the image size.
        scores (list[float] or None): overlap resolution as in :func:`masks_to_label_image`;
            None gives contested pixels to the segmentation listed first (ground truth).

    Returns:
        ndarray: (H, W) int32 label image.
    """
    if len(segmentations) == 0:
        return np.zeros((height, width), dtype=np.int32)
    rles = [coco_segmentation_to_rle(s, height, width) for s in segmentations]
    masks = mask_util.decode(rles)  # (H, W, N) uint8
    return masks_to_label_image(np.moveaxis(masks, -1, 0).astype(bool), scores)


def label_image_to_instances(labels, score=1.0):
    """
    Args:
        labels (ndarray): (H, W) integer label image, 0 the background.
        score (float): the score every instance gets.

    Returns:
        Instances: image size (H, W), ``pred_masks`` (N, H, W) bool and ``scores`` (N,), one
        instance per label present, in increasing label order.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    instances = Instances(labels.shape)
    instances.pred_masks = torch.from_numpy(labels[None] == ids[:, None, None])
    instances.scores = torch.full((len(ids),), float(score), dtype=torch.float32)
    return instances
