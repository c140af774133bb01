"""Masks to COCO run-length encodings (RLE): the one implementation the dataset conversion,
the synthetic data, prediction results and the benchmarks use.

Every RLE returned is compressed, with ``counts`` a str (JSON-ready): ``{"size": [H, W],
"counts": str}``.
"""

from typing import Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from scipy import ndimage

__all__ = [
    "coco_segmentation_to_rle",
    "decode_coco_segmentation",
    "label_image_to_rles",
    "mask_to_annotation_fields",
    "mask_to_rle",
]


def _json_ready(rle: Dict) -> Dict:
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_to_rle(mask: np.ndarray) -> Dict:
    """(H, W) bool or uint8 mask (nonzero is foreground) -> compressed RLE, str counts."""
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        mask = (mask != 0).astype(np.uint8)
    # (H, W) in Fortran order, as pycocotools wants; cv2.transpose is ~5x faster than
    # np.asfortranarray here.
    return _json_ready(mask_util.encode(cv2.transpose(np.ascontiguousarray(mask)).T))


def mask_to_annotation_fields(mask: np.ndarray) -> Tuple[Dict, int, List[int]]:
    """(H, W) bool mask, not empty -> (compressed RLE, pixel area, tight box [x, y, w, h]
    in the COCO convention, w = x_max - x_min + 1)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask: no box")
    bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    return mask_to_rle(mask), int(np.count_nonzero(mask)), bbox


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
        rles.append(
            _json_ready(
                mask_util.frPyObjects({"size": [height, width], "counts": runs}, height, width)
            )
        )
    return rles


def coco_segmentation_to_rle(segmentation, height, width):
    """
    Convert a COCO segmentation to a compressed RLE.

    Args:
        segmentation: one of
            - compressed RLE: ``{"size": [H, W], "counts": str or bytes}``,
            - uncompressed RLE: ``{"size": [H, W], "counts": [int, ...]}``,
            - polygons: ``[[x0, y0, x1, y1, ...], ...]`` in absolute pixel coordinates.
        height, width (int): the image size; an RLE of another size is an error.

    Returns:
        dict: ``{"size": [H, W], "counts": str}``, compressed (JSON-serializable).

    Raises:
        ValueError: malformed segmentation or size mismatch.
    """
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError(
                f"RLE segmentation needs 'counts' and 'size'; got keys {sorted(segmentation)}"
            )
        size = [int(s) for s in segmentation["size"]]
        if size != [int(height), int(width)]:
            raise ValueError(f"RLE size {size} does not match the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_util.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts}
        else:
            raise ValueError(
                f"RLE 'counts' must be a string or a list; got {type(counts).__name__}"
            )
    elif isinstance(segmentation, (list, tuple)):
        polygons = []
        for polygon in segmentation:
            coords = np.asarray(polygon, dtype=np.float64).reshape(-1)
            if coords.size < 6 or coords.size % 2:
                raise ValueError(
                    f"a polygon needs an even number (>= 6) of coordinates; got {coords.size}"
                )
            polygons.append(coords.tolist())
        if not polygons:
            rle = mask_util.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        else:
            rle = mask_util.merge(mask_util.frPyObjects(polygons, int(height), int(width)))
    else:
        raise ValueError(
            "segmentation must be an RLE dict or a list of polygons; "
            f"got {type(segmentation).__name__}"
        )
    counts = rle["counts"]
    return {
        "size": [int(height), int(width)],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def decode_coco_segmentation(segmentation, height, width):
    """
    Decode a COCO segmentation (see :func:`coco_segmentation_to_rle`) to an (H, W) bool mask.
    """
    rle = coco_segmentation_to_rle(segmentation, height, width)
    return mask_util.decode(rle).astype(bool)
