"""
Detectron2 evaluator for the nuclei metrics of :mod:`maskrcnnpp.evaluation.nuclei_metrics`:
foreground IoU / Dice (per-image mean and pooled), DSB score, AJI and PQ.
"""

import heapq
import itertools
import json
import logging
import os
import re
from collections import OrderedDict

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from ..data.image_io import read_image_rgb
from ..structures.label_image import (
    coco_segmentations_to_label_image,
    masks_to_label_image,
    semantic_to_label_image,
)
from ..utils.atomic_io import atomic_open
from ..utils.visualization import draw_side_by_side
from .nuclei_metrics import image_nuclei_stats, summarize_nuclei_stats
from .run_records import PER_IMAGE_NAME

__all__ = ["NucleiEvaluator"]


class NucleiEvaluator(DatasetEvaluator):
    """
    Scores instance or semantic predictions on nuclei datasets (docs/design.md section 11).

    Ground truth is the dataset's own dicts (``DatasetCatalog.get(dataset_name)``) or, when the
    dataset's metadata has ``instance_dataset_name`` (a semantic dataset's instance twin: same
    images, same ``image_id``), that dataset's dicts. Every entry of a record's
    ``"annotations"`` (``"segmentation"`` as an RLE dict or polygons) is one nucleus, whatever
    its category or ``iscrowd`` (the metrics are class-agnostic); where true masks overlap, the
    annotation listed first keeps the pixel. A record with no ``"annotations"`` is an image
    without nuclei.

    Predictions, per image (the first present is used):

    - ``"instances"``: ``pred_masks`` (N, H, W) bool at the original image size and ``scores``
      (N,); instances with score >= ``score_thresh`` are kept, overlaps go to the higher score.
    - ``"sem_seg"``: (C, H, W) scores with class 0 the background; ``argmax != 0`` is the
      foreground, split into nuclei by 8-connected components.

    Per-image statistics are computed in :meth:`process`, so memory stays small; :meth:`evaluate`
    gathers them from every process and returns ``{"nuclei": {...}}`` with the keys of
    :func:`summarize_nuclei_stats` (fractions in [0, 1], plus ``num_images``).

    With ``output_dir`` set, the per-image statistics go to
    ``output_dir/nuclei_per_image.json``; with ``num_vis > 0`` too, the ``num_vis`` images with
    the lowest DSB score are drawn to ``output_dir/worst_images/`` (image | ground truth |
    prediction, nuclei in colours with their outlines).
    """

    def __init__(self, dataset_name, *, score_thresh=0.5, output_dir=None, num_vis=0):
        """
        Args:
            dataset_name (str): a dataset registered in ``DatasetCatalog``.
            score_thresh (float): instances scoring below it are not counted.
            output_dir (str or None): where per-image statistics and pictures go.
            num_vis (int): how many of the worst images (lowest DSB score) to draw.
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._score_thresh = float(score_thresh)
        self._output_dir = output_dir
        if num_vis < 0:
            raise ValueError(f"NucleiEvaluator: num_vis must be >= 0; got {num_vis}")
        if num_vis > 0 and not output_dir:
            self._logger.warning("NucleiEvaluator: num_vis > 0 but no output_dir; nothing drawn")
        self._num_vis = int(num_vis) if output_dir else 0

        # A semantic dataset names its instance twin (same images and image ids) in metadata.
        self._gt_dataset_name = MetadataCatalog.get(dataset_name).get(
            "instance_dataset_name", dataset_name
        )
        self._records = OrderedDict()
        for record in DatasetCatalog.get(self._gt_dataset_name):
            if "annotations" not in record and "sem_seg_file_name" in record:
                raise ValueError(
                    f"NucleiEvaluator: dataset '{self._gt_dataset_name}' record "
                    f"'{record.get('file_name')}' has a semantic mask but no 'annotations'; the "
                    "nuclei metrics need instance annotations (touching nuclei cannot be recovered "
                    "from a semantic mask): set MetadataCatalog.get("
                    f"'{self._gt_dataset_name}').instance_dataset_name to the instance dataset of "
                    "the same images"
                )
            self._records[record["image_id"]] = record
        self.reset()

    def reset(self):
        self._per_image_stats = []
        # Max-heap (by negated DSB score) of the num_vis worst images seen by this process.
        self._worst = []
        self._insertion_counter = itertools.count()

    def _gt_label_image(self, record):
        if "height" not in record or "width" not in record:
            raise ValueError(
                f"NucleiEvaluator: dataset '{self._gt_dataset_name}' image {record['image_id']!r} "
                "has no 'height' / 'width'"
            )
        height, width = int(record["height"]), int(record["width"])
        segmentations = []
        for index, annotation in enumerate(record.get("annotations", [])):
            if "segmentation" not in annotation:
                raise ValueError(
                    f"NucleiEvaluator: dataset '{self._gt_dataset_name}' image "
                    f"{record['image_id']!r} annotation {index} has no 'segmentation'"
                )
            segmentations.append(annotation["segmentation"])
        try:
            return coco_segmentations_to_label_image(segmentations, height, width)
        except ValueError as e:
            raise ValueError(
                f"NucleiEvaluator: dataset '{self._gt_dataset_name}' image "
                f"{record['image_id']!r}: {e}"
            ) from e

    def _pred_label_image(self, output, image_id):
        if "instances" in output:
            instances = output["instances"]
            if not instances.has("pred_masks"):
                raise ValueError(
                    f"NucleiEvaluator: instances of image {image_id!r} have no 'pred_masks'; "
                    "the nuclei metrics need a model with a mask head"
                )
            keep = instances.scores >= self._score_thresh
            masks = instances.pred_masks[keep]
            if masks.dtype != torch.bool:
                raise ValueError(
                    f"NucleiEvaluator: pred_masks of image {image_id!r} have dtype {masks.dtype}; "
                    "expected bool masks pasted at the original image size"
                )
            return masks_to_label_image(masks.cpu().numpy(), instances.scores[keep].cpu().numpy())
        if "sem_seg" in output:
            scores = output["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] < 2:
                raise ValueError(
                    f"NucleiEvaluator: sem_seg of image {image_id!r} has shape "
                    f"{tuple(scores.shape)}; expected (C, H, W) class scores with C >= 2, "
                    "class 0 the background"
                )
            foreground = scores.argmax(dim=0) != 0
            return semantic_to_label_image(foreground.cpu().numpy())
        raise ValueError(
            f"NucleiEvaluator: the output for image {image_id!r} has neither 'instances' nor "
            f"'sem_seg' (keys: {sorted(output)})"
        )

    def process(self, inputs, outputs):
        """
        Args:
            inputs (list[dict]): model inputs, each with "image_id".
            outputs (list[dict]): model outputs, each with "instances" or "sem_seg".
        """
        for input, output in zip(inputs, outputs):
            image_id = input["image_id"]
            if image_id not in self._records:
                raise KeyError(
                    f"NucleiEvaluator: image_id {image_id!r} is not in dataset "
                    f"'{self._dataset_name}'"
                )
            record = self._records[image_id]
            for reached in output.get("caps_reached", ()):
                self._logger.warning(
                    f"NucleiEvaluator: image {image_id!r} ({record['file_name']}): {reached}"
                )
            gt_labels = self._gt_label_image(record)
            pred_labels = self._pred_label_image(output, image_id)
            if pred_labels.shape != gt_labels.shape:
                raise ValueError(
                    f"NucleiEvaluator: prediction for image {image_id!r} has size "
                    f"{pred_labels.shape}, ground truth {gt_labels.shape}; predictions must be at "
                    "the original image size"
                )
            stats = image_nuclei_stats(gt_labels, pred_labels)
            stats["image_id"] = image_id
            self._per_image_stats.append(stats)
            if self._num_vis > 0:
                self._remember_if_worst(stats["dsb_score"], record, gt_labels, pred_labels)

    def _remember_if_worst(self, dsb_score, record, gt_labels, pred_labels):
        entry = (
            -dsb_score,
            next(self._insertion_counter),
            {
                "image_id": record["image_id"],
                "file_name": record["file_name"],
                "dsb_score": dsb_score,
                "gt_labels": _compact_labels(gt_labels),
                "pred_labels": _compact_labels(pred_labels),
            },
        )
        if len(self._worst) < self._num_vis:
            heapq.heappush(self._worst, entry)
        elif entry[0] > self._worst[0][0]:  # lower DSB score than the best of the worst kept
            heapq.heapreplace(self._worst, entry)

    def evaluate(self):
        """
        Returns:
            OrderedDict: ``{"nuclei": OrderedDict(metric -> value)}``, or ``{}`` on processes
            other than the main one and when nothing was processed.
        """
        comm.synchronize()
        per_image_stats = list(itertools.chain(*comm.gather(self._per_image_stats, dst=0)))
        worst = list(itertools.chain(*comm.gather([e[2] for e in self._worst], dst=0)))
        if not comm.is_main_process():
            return {}
        if len(per_image_stats) == 0:
            self._logger.warning("[NucleiEvaluator] Did not receive valid predictions.")
            return {}

        summary = OrderedDict(summarize_nuclei_stats(per_image_stats))
        self._logger.info(
            f"Nuclei metrics on {self._dataset_name} (score >= {self._score_thresh}):\n"
            + create_small_table(summary)
        )
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with atomic_open(os.path.join(self._output_dir, PER_IMAGE_NAME), "w") as f:
                json.dump(per_image_stats, f)
            if self._num_vis > 0:
                worst.sort(key=lambda entry: (entry["dsb_score"], str(entry["image_id"])))
                self._draw_worst(worst[: self._num_vis])
        return OrderedDict([("nuclei", summary)])

    def _draw_worst(self, entries):
        vis_dir = os.path.join(self._output_dir, "worst_images")
        os.makedirs(vis_dir, exist_ok=True)
        for rank, entry in enumerate(entries):
            image = read_image_rgb(entry["file_name"])
            gt_labels, pred_labels = entry["gt_labels"], entry["pred_labels"]
            if image.shape[:2] != gt_labels.shape:
                image = cv2.resize(image, gt_labels.shape[::-1], interpolation=cv2.INTER_LINEAR)
            title = (
                f"{entry['image_id']}  DSB {entry['dsb_score']:.3f}  "
                f"GT {int(gt_labels.max())}  pred {int(pred_labels.max())}"
            )
            picture = draw_side_by_side(image, gt_labels, pred_labels, title)
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(entry["image_id"]))[:80]
            path = os.path.join(vis_dir, f"{rank:03d}_{name}.png")
            cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        self._logger.info(f"Wrote {len(entries)} worst-image pictures to {vis_dir}")


def _compact_labels(labels):
    """Label image in the smallest unsigned dtype that holds it (cheap to gather)."""
    return labels.astype(np.uint16) if labels.max(initial=0) < 2**16 else labels
