"""
The classical floor of the comparison tables: Otsu threshold + distance-transform watershed,
scored through the same :class:`NucleiEvaluator` as the trained models.

The recipe (:func:`otsu_watershed_labels`), fixed so that every table shows the same floor:

1. grey image (OpenCV's RGB -> grey weights), Gaussian blur 3x3;
2. Otsu threshold on the blurred grey image, foreground = above the threshold; when more than
   half of the image is foreground the image is taken as bright-field (dark nuclei on a light
   background) and the foreground inverted;
3. one morphological opening with a 3x3 square, then holes filled;
4. Euclidean distance transform of the foreground; seeds are the local maxima in a 7x7 window
   whose distance is above 2 px (a plateau of equal maxima, 8-connected, is one seed);
5. watershed of the negated distance from the seeds, by immersion in 0.5 px levels
   (:func:`_flood_from_seeds`, 8-connected), confined to the foreground: a foreground component
   without a seed (a blob thinner than about 5 px) stays background.
   (:func:`scipy.ndimage.watershed_ift` is not used: given the negated distance with the seeds,
   it lets one basin flood past another seed's whole disc.)
"""

import logging
import os

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from scipy import ndimage

from ..data.image_io import read_image_rgb
from ..structures.label_image import label_image_to_instances
from .nuclei_evaluator import NucleiEvaluator
from .run_records import write_final_metrics

__all__ = [
    "CLASSICAL_BASELINE_NAME",
    "otsu_watershed_labels",
    "evaluate_classical_baseline",
]

CLASSICAL_BASELINE_NAME = "classical (Otsu + watershed)"

_SEED_WINDOW = 7
_MIN_SEED_DISTANCE = 2.0
# The water level of the watershed goes down the distance transform in these steps (px).
_LEVEL_STEP = 0.5
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _foreground(image_rgb):
    """(H, W, 3) uint8 RGB -> (H, W) bool foreground: steps 1-3 of the module's recipe."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(grey, (3, 3), 0)
    threshold, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    foreground = blurred > threshold
    if foreground.mean() > 0.5:
        foreground = ~foreground
    opened = cv2.morphologyEx(
        foreground.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), dtype=np.uint8)
    )
    return ndimage.binary_fill_holes(opened.astype(bool))


def _flood_from_seeds(distance, markers):
    """
    Watershed by immersion of the negated distance: the basins grow from the seeds while the
    water level goes down the distance in steps of ``_LEVEL_STEP`` px; at each level every
    basin spreads (8-connected, one pixel a pass) over the unlabelled pixels at or above the
    level until none is left within reach. Where two basins reach a pixel in the same pass the
    higher label takes it. Background pixels (distance 0) and foreground never reached (a
    component without a seed) stay 0.

    Args:
        distance (ndarray): (H, W) float distance transform of the foreground.
        markers (ndarray): (H, W) int32, seeds labelled 1..K, 0 elsewhere.

    Returns:
        ndarray: (H, W) int32 basins.
    """
    labels = markers.astype(np.int32).copy()
    top = float(distance.max())
    for level in np.arange(np.floor(top / _LEVEL_STEP) * _LEVEL_STEP, 0.0, -_LEVEL_STEP):
        reachable = (distance >= level) & (labels == 0)
        while reachable.any():
            grown = ndimage.grey_dilation(labels, footprint=_EIGHT_CONNECTED)
            new = reachable & (grown > 0)
            if not new.any():
                break
            labels[new] = grown[new]
            reachable &= ~new
    return labels


def otsu_watershed_labels(image_rgb):
    """
    Segment nuclei with the recipe of the module docstring.

    Args:
        image_rgb (ndarray): (H, W, 3) uint8 RGB image (as :func:`read_image_rgb` returns).

    Returns:
        ndarray: (H, W) int32 label image, 0 the background, nuclei labelled 1..N.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            "otsu_watershed_labels: expected an (H, W, 3) uint8 RGB image; got shape "
            f"{image_rgb.shape}, dtype {image_rgb.dtype}"
        )
    foreground = _foreground(image_rgb)
    labels = np.zeros(foreground.shape, dtype=np.int32)
    if not foreground.any():
        return labels

    distance = ndimage.distance_transform_edt(foreground)
    peaks = (distance == ndimage.maximum_filter(distance, size=_SEED_WINDOW)) & (
        distance > _MIN_SEED_DISTANCE
    )
    markers, num_seeds = ndimage.label(peaks, structure=_EIGHT_CONNECTED)
    if num_seeds == 0:
        return labels
    flooded = _flood_from_seeds(distance, markers)

    # consecutive labels 1..N (a seed can lose its whole basin to a neighbour's plateau)
    present = np.unique(flooded)
    present = present[present > 0]
    lookup = np.zeros(num_seeds + 1, dtype=np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    labels[...] = lookup[flooded]
    return labels


def evaluate_classical_baseline(dataset_name, output_dir=None):
    """
    Score :func:`otsu_watershed_labels` on a registered dataset through :class:`NucleiEvaluator`
    (every nucleus with score 1.0).

    Args:
        dataset_name (str): a registered dataset; a semantic dataset is scored on its instance
            twin (metadata ``instance_dataset_name``), whose records have the images and ids.
        output_dir (str or None): a folder laid out like a ``tools/train_net.py`` run:
            ``final_metrics.json`` and ``inference/<dataset>/nuclei_per_image.json`` (the
            instance dataset's name); nothing is written when None.

    Returns:
        dict: ``{"nuclei": {...}}``, the keys of :func:`summarize_nuclei_stats`.
    """
    instance_dataset = MetadataCatalog.get(dataset_name).get("instance_dataset_name", dataset_name)
    records = DatasetCatalog.get(instance_dataset)
    if len(records) == 0:
        raise ValueError(f"evaluate_classical_baseline: dataset '{instance_dataset}' has no images")
    evaluator = NucleiEvaluator(
        instance_dataset,
        score_thresh=0.5,
        output_dir=os.path.join(output_dir, "inference", instance_dataset) if output_dir else None,
    )
    evaluator.reset()
    for record in records:
        image = read_image_rgb(record["file_name"])
        labels = otsu_watershed_labels(image)
        evaluator.process(
            [{"image_id": record["image_id"]}], [{"instances": label_image_to_instances(labels)}]
        )
    results = dict(evaluator.evaluate())
    if output_dir:
        write_final_metrics(output_dir, {instance_dataset: results}, method=CLASSICAL_BASELINE_NAME)
    logging.getLogger(__name__).info(
        "classical baseline on %s: %s", instance_dataset, results.get("nuclei")
    )
    return results
