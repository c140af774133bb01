"""COCO instance results (RLE masks) from a label image."""

from typing import Dict, List, Sequence

import numpy as np
import pycocotools.mask as mask_util
from scipy import ndimage

__all__ = ["NUCLEUS_CATEGORY_ID", "label_image_to_rles", "coco_instance_results"]

# Predictions are class-agnostic nuclei: every result has this COCO category id.
NUCLEUS_CATEGORY_ID = 1


def _strip_runs(strip: np.ndarray) -> List[int]:
    """Column-major run lengths of a bool (H, w) array, starting with a (maybe empty) run of
    zeros, as COCO's uncompressed RLE."""
    flat = strip.reshape(-1, order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs


def label_image_to_rles(labels: np.ndarray) -> List[Dict]:
    """
    Args:
        labels (ndarray): (H, W) integer label image, 0 background, nuclei 1..K.

    Returns:
        list[dict]: K compressed COCO RLEs (``{"size": [H, W], "counts": str}``), the k-th
        that of label k + 1 (an empty mask for a label with no pixels). Only the columns each
        nucleus spans are scanned, so K nuclei in a large image cost O(sum of H * box width),
        not O(K * H * W).
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    num_labels = int(labels.max(initial=0))
    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=num_labels)
    rles = []
    for label, box in enumerate(boxes, start=1):
        if box is None:
            runs = [height * width]
        else:
            x0, x1 = box[1].start, box[1].stop
            # Column-major order: columns x0..x1-1 are one contiguous stretch of pixels, with
            # height * x0 zeros before it and height * (width - x1) zeros after it.
            runs = _strip_runs(labels[:, x0:x1] == label)
            runs[0] += height * x0
            trailing = height * (width - x1)
            if len(runs) % 2:  # ends with a run of zeros
                runs[-1] += trailing
            elif trailing:
                runs.append(trailing)
        rle = mask_util.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        rle["counts"] = rle["counts"].decode("ascii")
        rles.append(rle)
    return rles


def coco_instance_results(image_id, labels: np.ndarray, measurements: Sequence[Dict]) -> List[Dict]:
    """
    Args:
        image_id: the image's id in the run's ``coco_images.json``.
        labels (ndarray): (H, W) label image, nuclei 1..K.
        measurements (list[dict]): :func:`maskrcnnpp.inference.measurements.measure_nuclei`
            of ``labels`` (K rows, label order).

    Returns:
        list[dict]: K COCO results ``{"image_id", "category_id", "segmentation" (compressed
        RLE), "bbox" [x, y, w, h], "score"}``, loadable by ``pycocotools.coco.COCO.loadRes``
        and ``tools/evaluate.py``.
    """
    rles = label_image_to_rles(labels)
    if len(rles) != len(measurements):
        raise ValueError(f"{len(rles)} labels but {len(measurements)} measurement rows")
    return [
        {
            "image_id": image_id,
            "category_id": NUCLEUS_CATEGORY_ID,
            "segmentation": rle,
            "bbox": [row["bbox_x"], row["bbox_y"], row["bbox_width"], row["bbox_height"]],
            "score": row["score"],
        }
        for rle, row in zip(rles, measurements)
    ]
