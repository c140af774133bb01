#!/usr/bin/env python
"""
COCO AP and nuclei metrics of a COCO instance-segmentation results file against COCO ground
truth (what ``tools/evaluate.py`` runs; :func:`evaluate_results_file` is the whole tool).

- ``segm`` and ``bbox``: COCO AP in percent (AP, AP50, AP75, APs, APm, APl) through
  Detectron2's own COCO path (``_evaluate_predictions_on_coco`` with the official pycocotools
  COCOeval) and maxDets [1, 10, 1000], so that images with hundreds of nuclei are not capped.
  Every detection counts, whatever its score. A result without ``bbox`` gets its mask's box.
- ``nuclei``: foreground IoU / Dice, DSB score, AJI and PQ (fractions, see
  ``maskrcnnpp.evaluation.nuclei_metrics``) over every ground-truth image, class-agnostic:
  predictions with score >= ``score_thresh``, overlaps resolved by score; the first listed
  ground-truth annotation keeps pixels where true masks overlap.

The results file is what Detectron2's COCOEvaluator writes (``coco_instances_results.json``):
a JSON list of ``{"image_id", "category_id", "score", "segmentation"[, "bbox"]}``, the
segmentation an RLE (compressed or not) or polygons.

Pairing: when the results come with the image list of ``tools/predict.py``
(``coco_images.json`` beside the results, or an explicit list), results and ground truth are
paired by file name (the base name), not by image id: the two sets of file names must be
equal, else the run stops naming the first image that differs. Without such a list, the
results' ``image_id`` must be the ground truth's (as Detectron2's COCOEvaluator writes them).
Bad input raises :class:`InputError`, a message naming the file and the fault.
"""

import contextlib
import io
import json
import logging
import math
import os
import sys
from collections import OrderedDict, defaultdict

import pycocotools.mask as mask_util
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from ..structures.label_image import coco_segmentations_to_label_image
from ..structures.rle import coco_segmentation_to_rle
from ..utils.atomic_io import atomic_open
from .nuclei_metrics import image_nuclei_stats, summarize_nuclei_stats

logger = logging.getLogger("maskrcnnpp.evaluate")

# COCOeval's maxDets: the last one is what AP uses; DSB images hold up to ~375 nuclei.
MAX_DETS_PER_IMAGE = [1, 10, 1000]
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class InputError(Exception):
    """Bad input: the message names the file and the fault."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_json(path, what):
    """Read a JSON file; InputError if it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} file {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{what} file {path}: is a directory") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{what} file {path}: not a text (JSON) file ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{what} file {path}: not valid JSON ({e})") from None


def check_ground_truth(gt, path):
    """
    Validate COCO ground truth and normalize it in place for COCOeval: segmentations become
    compressed RLEs; missing ``area`` (mask area), ``bbox`` (mask box), ``iscrowd`` (0) and
    ``id`` (sequential) are filled in.

    Returns:
        dict: image id -> image entry.
    """
    if not isinstance(gt, dict):
        raise InputError(
            f"ground-truth file {path}: expected a COCO JSON object, got a {type(gt).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise InputError(f"ground-truth file {path}: missing or non-list '{key}'")
    images = {}
    for index, image in enumerate(gt["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise InputError(f"ground-truth file {path}: images[{index}] has no 'id'")
        for key in ("height", "width"):
            if not isinstance(image.get(key), int) or image[key] <= 0:
                raise InputError(
                    f"ground-truth file {path}: image {image['id']!r} has no positive "
                    f"integer '{key}'"
                )
        if image["id"] in images:
            raise InputError(f"ground-truth file {path}: image id {image['id']!r} appears twice")
        images[image["id"]] = image
    category_ids = set()
    for index, category in enumerate(gt["categories"]):
        if not isinstance(category, dict) or "id" not in category:
            raise InputError(f"ground-truth file {path}: categories[{index}] has no 'id'")
        category_ids.add(category["id"])

    used_ids = {a["id"] for a in gt["annotations"] if isinstance(a, dict) and "id" in a}
    next_id = max([i for i in used_ids if isinstance(i, int)], default=0) + 1
    for index, annotation in enumerate(gt["annotations"]):
        where = f"ground-truth file {path}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise InputError(f"{where} is not an object")
        if annotation.get("image_id") not in images:
            raise InputError(f"{where} refers to unknown image_id {annotation.get('image_id')!r}")
        if annotation.get("category_id") not in category_ids:
            raise InputError(f"{where} has unknown category_id {annotation.get('category_id')!r}")
        if "segmentation" not in annotation:
            raise InputError(f"{where} has no 'segmentation'")
        image = images[annotation["image_id"]]
        try:
            rle = coco_segmentation_to_rle(
                annotation["segmentation"], image["height"], image["width"]
            )
        except ValueError as e:
            raise InputError(f"{where}: bad 'segmentation': {e}") from None
        annotation["segmentation"] = rle
        annotation.setdefault("area", float(mask_util.area(rle)))
        annotation.setdefault("bbox", mask_util.toBbox(rle).tolist())
        annotation.setdefault("iscrowd", 0)
        if "id" not in annotation:
            annotation["id"] = next_id
            next_id += 1
    return images


def check_results(results, path, images, category_ids):
    """
    Validate a COCO results list and normalize it: segmentations become compressed RLEs,
    missing ``bbox`` is the mask's box.

    Returns:
        list[dict]: the normalized results.
    """
    if not isinstance(results, list):
        raise InputError(
            f"results file {path}: expected a JSON list of results, got a {type(results).__name__}"
        )
    normalized = []
    for index, result in enumerate(results):
        where = f"results file {path}: entry {index}"
        if not isinstance(result, dict):
            raise InputError(f"{where} is not an object")
        image_id = result.get("image_id")
        if image_id not in images:
            raise InputError(
                f"{where} refers to image_id {image_id!r}, which is not in the ground truth"
            )
        if result.get("category_id") not in category_ids:
            raise InputError(
                f"{where} has category_id {result.get('category_id')!r}, which is not in the "
                "ground truth"
            )
        if "segmentation" not in result:
            raise InputError(f"{where} (image_id {image_id!r}) has no 'segmentation'")
        if not _is_number(result.get("score")):
            raise InputError(f"{where} (image_id {image_id!r}) has no finite numeric 'score'")
        image = images[image_id]
        try:
            rle = coco_segmentation_to_rle(result["segmentation"], image["height"], image["width"])
        except ValueError as e:
            raise InputError(f"{where} (image_id {image_id!r}): bad 'segmentation': {e}") from None
        if "bbox" in result:
            bbox = result["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
                raise InputError(
                    f"{where} (image_id {image_id!r}): 'bbox' must be 4 numbers [x, y, w, h]"
                )
        else:
            bbox = mask_util.toBbox(rle).tolist()
        normalized.append(
            {
                "image_id": image_id,
                "category_id": result["category_id"],
                "score": float(result["score"]),
                "segmentation": rle,
                "bbox": [float(v) for v in bbox],
            }
        )
    return normalized


def evaluate_coco(coco_gt, results, iou_type):
    """
    COCO AP through Detectron2's ``_evaluate_predictions_on_coco`` (official COCOeval).

    Returns:
        OrderedDict: AP, AP50, AP75, APs, APm, APl in percent, NaN where COCOeval has no value
        (no predictions, or no ground truth in an area range), as Detectron2's COCOEvaluator.
    """
    if len(results) == 0:
        logger.warning(f"No predictions: {iou_type} AP is NaN")
        return OrderedDict((name, float("nan")) for name in COCO_METRICS)
    # COCOeval prints its progress and summary table: the tables are printed once, by the caller
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = _evaluate_predictions_on_coco(
            coco_gt,
            results,
            iou_type,
            cocoeval_fn=COCOeval,
            max_dets_per_image=MAX_DETS_PER_IMAGE,
        )
    return OrderedDict(
        (name, float(coco_eval.stats[index] * 100) if coco_eval.stats[index] >= 0 else float("nan"))
        for index, name in enumerate(COCO_METRICS)
    )


def evaluate_nuclei(gt, images, results, score_thresh):
    """
    Nuclei metrics over every ground-truth image (class-agnostic).

    Returns:
        OrderedDict: :func:`summarize_nuclei_stats` of the per-image statistics.
    """
    gt_by_image = defaultdict(list)
    for annotation in gt["annotations"]:
        gt_by_image[annotation["image_id"]].append(annotation["segmentation"])
    pred_by_image = defaultdict(list)
    for result in results:
        if result["score"] >= score_thresh:
            pred_by_image[result["image_id"]].append(result)

    per_image_stats = []
    for image_id, image in images.items():
        height, width = image["height"], image["width"]
        gt_labels = coco_segmentations_to_label_image(gt_by_image[image_id], height, width)
        predictions = pred_by_image[image_id]
        pred_labels = coco_segmentations_to_label_image(
            [p["segmentation"] for p in predictions],
            height,
            width,
            [p["score"] for p in predictions],
        )
        per_image_stats.append(image_nuclei_stats(gt_labels, pred_labels))
    return OrderedDict(summarize_nuclei_stats(per_image_stats))


def format_tables(metrics):
    """Two pipe tables: COCO AP (percent) and nuclei metrics (fractions)."""
    coco_rows = [
        [task] + [metrics[task][name] for name in COCO_METRICS] for task in ("segm", "bbox")
    ]
    coco_table = tabulate(
        coco_rows, headers=["task", *COCO_METRICS], tablefmt="pipe", floatfmt=".3f", numalign="left"
    )
    nuclei = metrics["nuclei"]
    nuclei_table = tabulate(
        [list(nuclei.values())],
        headers=list(nuclei.keys()),
        tablefmt="pipe",
        floatfmt=".4f",
        numalign="left",
    )
    return f"COCO AP (%):\n{coco_table}\n\nNuclei metrics (fractions):\n{nuclei_table}"


def _nan_to_none(metrics):
    return {
        task: {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()
        }
        for task, values in metrics.items()
    }


def load_image_list(path, gt_path, gt_images):
    """
    Map the image ids of a predict run's ``coco_images.json`` to the ground truth's, by file
    base name.

    Returns:
        dict: results image id -> ground-truth image id.

    Raises:
        InputError: the list is malformed, a base name is ambiguous, the two sets of file
            names differ (naming the first that differs) or an image's size differs.
    """
    listed = load_json(path, "image list")
    entries = listed.get("images") if isinstance(listed, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "id" in e and isinstance(e.get("file_name"), str) for e in entries
    ):
        raise InputError(f'image list {path}: expected {{"images": [{{"id", "file_name", ...}}]}}')

    def by_name(images, where):
        names = {}
        for image in images:
            name = os.path.basename(str(image.get("file_name", "")))
            if not name:
                raise InputError(f"{where}: image {image.get('id')!r} has no 'file_name'")
            if name in names:
                raise InputError(f"{where}: two images are named {name}: cannot pair by file name")
            names[name] = image
        return names

    predicted = by_name(entries, f"image list {path}")
    truth = by_name(gt_images.values(), f"ground-truth file {gt_path}")
    for name in sorted(set(predicted) ^ set(truth)):
        side = (
            f"predicted ({path}) but not in the ground truth"
            if name in predicted
            else (f"in the ground truth but not predicted ({path})")
        )
        raise InputError(
            f"results and ground truth are not the same image set: {name} is {side} "
            f"({len(predicted)} predicted, {len(truth)} in {gt_path})"
        )
    mapping = {}
    for name, entry in predicted.items():
        gt_image = truth[name]
        size = (entry.get("height"), entry.get("width"))
        if None not in size and size != (gt_image["height"], gt_image["width"]):
            raise InputError(
                f"image {name}: predicted at {size[1]}x{size[0]} ({path}) but "
                f"{gt_image['width']}x{gt_image['height']} in {gt_path} (WxH)"
            )
        mapping[entry["id"]] = gt_image["id"]
    return mapping


def run(gt_path, pred_path, score_thresh, images_path=None):
    """
    Args:
        images_path (str or None): a predict run's ``coco_images.json``: pair by file name.

    Returns:
        OrderedDict: {"segm": {...}, "bbox": {...}, "nuclei": {...}}.

    Raises:
        InputError: bad input.
    """
    gt = load_json(gt_path, "ground-truth")
    images = check_ground_truth(gt, gt_path)
    results = load_json(pred_path, "results")
    if images_path is not None and isinstance(results, list):
        mapping = load_image_list(images_path, gt_path, images)
        for index, result in enumerate(results):
            if isinstance(result, dict):
                if result.get("image_id") not in mapping:
                    raise InputError(
                        f"results file {pred_path}: entry {index} refers to image_id "
                        f"{result.get('image_id')!r}, which is not in {images_path}"
                    )
                result["image_id"] = mapping[result["image_id"]]
    results = check_results(results, pred_path, images, {c["id"] for c in gt["categories"]})

    coco_gt = COCO()
    coco_gt.dataset = gt
    with contextlib.redirect_stdout(sys.stderr):
        coco_gt.createIndex()
    metrics = OrderedDict()
    metrics["segm"] = evaluate_coco(coco_gt, results, "segm")
    metrics["bbox"] = evaluate_coco(coco_gt, results, "bbox")
    metrics["nuclei"] = evaluate_nuclei(gt, images, results, score_thresh)
    return metrics


def find_image_list(pred_path, images_path=None):
    """The image list to pair by file name: ``images_path``, else ``coco_images.json`` beside
    ``pred_path`` when there, else None (pair by image id)."""
    if images_path is not None:
        return images_path
    beside = os.path.join(os.path.dirname(os.path.abspath(pred_path)), "coco_images.json")
    return beside if os.path.isfile(beside) else None


def evaluate_results_file(gt_path, pred_path, *, out=None, score_thresh=0.5, images_path=None):
    """
    Score ``pred_path`` against ``gt_path``, print the tables (and write ``out``): the whole
    of ``tools/evaluate.py`` after its argument parsing.

    Args:
        images_path (str or None): image list to pair by file name (default: see
            :func:`find_image_list`).

    Returns:
        int: exit status, 0 or 1 (bad input or an unwritable ``out``, said on stderr; nothing
        is written then).
    """
    images_path = find_image_list(pred_path, images_path)
    try:
        metrics = run(gt_path, pred_path, score_thresh, images_path)
        no_predictions = load_json(pred_path, "results") == []
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if no_predictions:
        print(
            f"No predictions: {pred_path} is an empty list. COCO AP is undefined (nan) and the "
            "nuclei metrics below score an empty prediction on every image.\n"
        )
    print(format_tables(metrics))
    if out:
        try:
            with atomic_open(out, "w") as f:
                json.dump(_nan_to_none(metrics), f, indent=2)
        except OSError as e:
            print(f"error: output file {out}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"\nwrote {out}")
    return 0
