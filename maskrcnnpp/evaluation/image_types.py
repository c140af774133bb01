"""Nuclei metrics per image type: the numbers of a split, broken down by imaging modality and,
for fluorescence, by image size (the DSB2018 image types differ most in those)."""

import collections
import json
import os

import cv2

from ..data.dsb2018_conversion import imaging_modality
from .nuclei_metrics import summarize_nuclei_stats

__all__ = ["image_type", "image_types_of_coco", "summarize_by_image_type"]


def image_type(image) -> str:
    """
    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        "histology", "brightfield", or "fluorescence HxW" (its size, e.g. "fluorescence 256x256").
    """
    modality = imaging_modality(image)
    if modality != "fluorescence":
        return modality
    return f"fluorescence {image.shape[0]}x{image.shape[1]}"


def image_types_of_coco(gt_json: str) -> dict:
    """``{image_id: image_type}`` for every image of a COCO ground-truth file (its images are
    read: ``file_name`` relative to the JSON's folder's parent, as the DSB2018 conversion writes
    it, or absolute)."""
    with open(gt_json) as f:
        images = json.load(f)["images"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(gt_json)))
    types = {}
    for image in images:
        path = (
            image["file_name"]
            if os.path.isabs(image["file_name"])
            else os.path.join(root, image["file_name"])
        )
        pixels = cv2.imread(path, cv2.IMREAD_COLOR)
        if pixels is None:
            raise FileNotFoundError(f"{gt_json}: image {image['id']} not readable: {path}")
        types[image["id"]] = image_type(pixels[:, :, ::-1])
    return types


def summarize_by_image_type(per_image_stats, types: dict) -> dict:
    """
    Args:
        per_image_stats (list[dict]): per-image results with "image_id" (nuclei_per_image.json).
        types (dict): ``{image_id: type}``.

    Returns:
        ``{type: summary}`` (:func:`~maskrcnnpp.evaluation.nuclei_metrics.summarize_nuclei_stats`
        of that type's images, with "num_images" and "num_gt"), types sorted by name, and "all".
    """
    groups = collections.defaultdict(list)
    for stats in per_image_stats:
        groups[types[stats["image_id"]]].append(stats)
    out = {}
    for name in sorted(groups) + ["all"]:
        members = list(per_image_stats) if name == "all" else groups[name]
        summary = summarize_nuclei_stats(members)
        summary["num_gt"] = sum(int(s["num_gt"]) for s in members)
        out[name] = summary
    return out
