"""Per-nucleus measurements of a label image."""

from collections import OrderedDict
from typing import List

import numpy as np
from scipy import ndimage

__all__ = ["MEASUREMENT_COLUMNS", "measure_nuclei"]

# Column order of the measurements CSV. Pixel coordinates: y = row, x = column, (0, 0) the
# centre of the top-left pixel; the box is COCO's [x, y, width, height] of the nucleus'
# pixels (as in the COCO results JSON).
MEASUREMENT_COLUMNS = (
    "label",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_x",
    "bbox_y",
    "bbox_width",
    "bbox_height",
    "score",
    "mean_intensity",
)


def measure_nuclei(labels: np.ndarray, scores: np.ndarray, image: np.ndarray) -> List[OrderedDict]:
    """
    Args:
        labels (ndarray): (H, W) integer label image, 0 background, nuclei 1..K, each with at
            least one pixel.
        scores (ndarray): (K,) scores, ``scores[k - 1]`` that of label ``k``.
        image (ndarray): (H, W, 3) or (H, W) image the labels were predicted on; its
            intensity is the mean over colour channels.

    Returns:
        list[OrderedDict]: one row per nucleus in label order, keys
        :data:`MEASUREMENT_COLUMNS`: ``area`` in pixels, ``centroid_*`` the mean pixel
        coordinates, ``mean_intensity`` the mean image intensity over the nucleus' pixels
        (in the image's units: 0-255 for images read by ``read_image_rgb``).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    num_nuclei = scores.size
    if labels.ndim != 2:
        raise ValueError(f"labels must be an (H, W) label image; got shape {labels.shape}")
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image of shape {image.shape} does not match labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > num_nuclei):
        raise ValueError(
            f"labels must lie in 0..{num_nuclei} (one label per score); got labels "
            f"{labels.min()}..{labels.max()}"
        )
    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=num_nuclei)
    # Every sum runs over the nucleus' box only: K nuclei in a large image cost the area of
    # their boxes, not K full-image passes.
    measurements = []
    for label, box in enumerate(boxes, start=1):
        if box is None:
            raise ValueError(f"label {label} has no pixels (labels must run 1..{num_nuclei})")
        box_y, box_x = box
        mask = labels[box] == label
        rows, columns = np.nonzero(mask)
        area = int(rows.size)
        measurements.append(
            OrderedDict(
                [
                    ("label", label),
                    ("area", area),
                    ("centroid_y", float(box_y.start + rows.mean())),
                    ("centroid_x", float(box_x.start + columns.mean())),
                    ("bbox_x", int(box_x.start)),
                    ("bbox_y", int(box_y.start)),
                    ("bbox_width", int(box_x.stop - box_x.start)),
                    ("bbox_height", int(box_y.stop - box_y.start)),
                    ("score", float(scores[label - 1])),
                    # mean over the nucleus' pixels and the colour channels
                    ("mean_intensity", float(image[box][mask].mean(dtype=np.float64))),
                ]
            )
        )
    return measurements
