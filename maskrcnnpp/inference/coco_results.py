"""COCO instance results (RLE masks) from a label image."""

from typing import Dict, List, Sequence

import numpy as np

from ..structures.rle import label_image_to_rles

__all__ = ["NUCLEUS_CATEGORY_ID", "coco_instance_results"]

# Predictions are class-agnostic nuclei: every result has this COCO category id.
NUCLEUS_CATEGORY_ID = 1


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
