"""
Throughput of the data and evaluation code:

- :func:`maskrcnnpp.data.dsb2018_conversion.prepare_dsb2018` (what
  ``datasets/prepare_dsb2018.py`` runs) converting a DSB2018 copy (Kaggle layout) into a temporary
  folder, timed in this process (interpreter start-up excluded);
- the nuclei metrics (:mod:`maskrcnnpp.evaluation.nuclei_metrics`) as an evaluation runs
  them: per image, ground-truth and predicted COCO RLE segmentations decoded to label images
  (predictions resolved by score), :func:`image_nuclei_stats`, then
  :func:`summarize_nuclei_stats` over the images. The predictions are the ground truth
  perturbed (every nucleus shifted by 1 px and eroded, every 7th dropped), so matching has
  real work to do.
"""

import json
import os
import tempfile
import time
from typing import Dict, List, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util

from maskrcnnpp.data.dsb2018_conversion import prepare_dsb2018
from maskrcnnpp.evaluation.nuclei_metrics import image_nuclei_stats, summarize_nuclei_stats
from maskrcnnpp.structures.label_image import coco_segmentations_to_label_image
from maskrcnnpp.structures.rle import mask_to_rle

from .runner import RECORD_FIELDS, machine_info

__all__ = ["subset_dsb2018_root", "prepare_throughput", "metrics_throughput"]


def subset_dsb2018_root(root: str, num_images: int, out_dir: str) -> str:
    """
    A DSB2018 root under ``out_dir`` holding the first ``num_images`` image folders of
    ``root``'s split lists (symbolic links) and split lists restricted to them.

    Returns:
        str: the new root.
    """
    subset = os.path.join(out_dir, "dsb2018_subset")
    os.makedirs(os.path.join(subset, "stage1_train"), exist_ok=True)
    kept = 0
    for list_name in sorted(f for f in os.listdir(root) if f.endswith(".txt")):
        with open(os.path.join(root, list_name)) as f:
            ids = [line.strip() for line in f if line.strip()]
        share = ids[: max(1, (num_images + 1) // 2)] if kept < num_images else []
        share = share[: num_images - kept]
        kept += len(share)
        with open(os.path.join(subset, list_name), "w") as f:
            f.write("".join(i + "\n" for i in share))
        for image_id in share:
            link = os.path.join(subset, "stage1_train", image_id)
            if not os.path.exists(link):
                os.symlink(os.path.join(os.path.abspath(root), "stage1_train", image_id), link)
    if kept == 0:
        raise ValueError(f"{root}: no split list (<split>.txt) names an image")
    return subset


def _record(model: str, variant: str, images: int, seconds: float, notes: Dict[str, object]):
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(
        {
            "suite": "throughput",
            "model": model,
            "variant": variant,
            "height": None,
            "width": None,
            "batch": images,
            "device": "cpu",
            "threads": None,
            "throughput": {
                "images": images,
                "seconds": seconds,
                "images_per_s": images / seconds if seconds > 0 else None,
            },
            "notes": notes,
            "machine": machine_info(),
        }
    )
    return record


def prepare_throughput(
    root: str, *, workers: int, num_images: Optional[int] = None
) -> Dict[str, object]:
    """
    Times ``prepare_dsb2018(root, <temporary folder>, workers=workers)``.

    Args:
        root: DSB2018 copy (Kaggle layout with split lists).
        num_images: convert only this many images (a linked subset of ``root``); None: all.

    Returns:
        dict: a throughput record; its notes hold "instances_json" files kept for
        :func:`metrics_throughput` in a temporary folder ("out_dir") the caller removes.
    """
    out_dir = tempfile.mkdtemp(prefix="maskrcnnpp-bench-dsb2018-")
    if num_images is not None:
        root = subset_dsb2018_root(root, num_images, out_dir)
    start = time.perf_counter()
    summary = prepare_dsb2018(root, os.path.join(out_dir, "prepared"), workers=workers)
    seconds = time.perf_counter() - start
    images = sum(s["images"] for s in summary.values())
    notes = {
        "root": root,
        "instances": sum(s["instances"] for s in summary.values()),
        "instances_json": [s["json_file"] for s in summary.values()],
        "out_dir": out_dir,
    }
    return _record("prepare_dsb2018", f"workers={workers}", images, seconds, notes)


def _perturbed_predictions(annotations: List[dict], height: int, width: int, seed: int):
    """COCO RLE predictions with scores: each nucleus shifted by 1 px and eroded, every 7th dropped."""
    rng = np.random.default_rng(seed)
    kernel = np.ones((3, 3), np.uint8)
    shift = np.float32([[1, 0, 1], [0, 1, 0]])
    predictions = []
    for k, annotation in enumerate(annotations):
        if k % 7 == 6:
            continue
        mask = mask_util.decode(annotation["segmentation"])
        mask = cv2.erode(cv2.warpAffine(mask, shift, (width, height)), kernel)
        if not mask.any():
            continue
        predictions.append((mask_to_rle(mask), float(rng.uniform(0.05, 1.0))))
    return predictions


def metrics_throughput(instances_json: List[str], *, num_images: int = 200) -> Dict[str, object]:
    """
    Times the nuclei metrics on the first ``num_images`` images of the COCO files (fewer when
    they hold fewer), with perturbed ground truth as predictions.

    Returns:
        dict: a throughput record.
    """
    images = []
    for path in instances_json:
        with open(path) as f:
            coco = json.load(f)
        by_image = {image["id"]: [] for image in coco["images"]}
        for annotation in coco["annotations"]:
            by_image[annotation["image_id"]].append(annotation)
        for image in coco["images"]:
            images.append((image, by_image[image["id"]]))
    images = images[:num_images]
    if not images:
        raise ValueError(f"no images in {instances_json}")
    cases = []
    for seed, (image, annotations) in enumerate(images):
        height, width = image["height"], image["width"]
        predictions = _perturbed_predictions(annotations, height, width, seed)
        cases.append((height, width, [a["segmentation"] for a in annotations], predictions))
    start = time.perf_counter()
    stats = []
    for height, width, gt_segmentations, predictions in cases:
        gt = coco_segmentations_to_label_image(gt_segmentations, height, width)
        pred = coco_segmentations_to_label_image(
            [rle for rle, _ in predictions], height, width, scores=[s for _, s in predictions]
        )
        stats.append(image_nuclei_stats(gt, pred))
    summary = summarize_nuclei_stats(stats)
    seconds = time.perf_counter() - start
    notes = {
        "nuclei": sum(len(c[2]) for c in cases),
        "predictions": sum(len(c[3]) for c in cases),
        "dsb_score": summary["dsb_score"],
    }
    return _record("nuclei_metrics", "", len(cases), seconds, notes)
