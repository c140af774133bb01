"""The output folder of a prediction run: per-image label images, overlays and measurement
CSVs, and one COCO results file for the run; every file is written atomically.

Layout of ``output_dir``::

    labels/<name>.png         16-bit label image: 0 background, 1..N the nuclei
    overlays/<name>.png       the image with each nucleus outlined in its own colour
    measurements/<name>.csv   one row per nucleus (MEASUREMENT_COLUMNS, floats to 4 decimals)
    coco_instances_results.json   COCO results (RLE masks) of every image
    coco_images.json          {"images": [{"id", "file_name", "height", "width", "num_tiles"}],
                               "categories": [{"id": 1, "name": "nucleus"}]}

Label ``k`` of an image is row ``k`` of its CSV and its ``k``-th result in the COCO file.
"""

import csv
import json
import os
from typing import Dict, List

import cv2
import numpy as np

from ..evaluation.nuclei_evaluator import draw_labels
from ..utils.atomic_io import atomic_open
from .coco_results import NUCLEUS_CATEGORY_ID, coco_instance_results
from .measurements import MEASUREMENT_COLUMNS, measure_nuclei

__all__ = ["PredictionWriter", "write_png"]

MAX_LABELS_16_BIT = 2**16 - 1


def write_png(path: str, image: np.ndarray) -> None:
    """Write an (H, W) uint8/uint16 or (H, W, 3) uint8 RGB array as a PNG, atomically."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    with atomic_open(path, "wb") as f:
        f.write(encoded.tobytes())


class PredictionWriter:
    """Writes each image's outputs as it comes, and the run's COCO files at :meth:`close`."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.images: List[Dict] = []
        self.results: List[Dict] = []

    def path(self, kind: str, name: str) -> str:
        """Path of output ``kind`` ("labels", "overlays" or "measurements") of image ``name``."""
        extension = ".csv" if kind == "measurements" else ".png"
        return os.path.join(self.output_dir, kind, name + extension)

    def write_image(self, image_id: int, name: str, file_name: str, image: np.ndarray, prediction) -> int:
        """
        Args:
            image_id (int): the image's id in the COCO files.
            name (str): output file stem, unique within the run.
            file_name (str): the input file, as recorded in ``coco_images.json``.
            image (ndarray): (H, W, 3) uint8 RGB image as predicted on.
            prediction (NucleiPrediction): its nuclei.

        Returns:
            int: the number of nuclei written.
        """
        labels, scores = prediction.labels, prediction.scores
        if labels.max(initial=0) > MAX_LABELS_16_BIT:
            raise ValueError(
                f"{labels.max()} nuclei do not fit a 16-bit label image (at most {MAX_LABELS_16_BIT})"
            )
        measurements = measure_nuclei(labels, scores, image)
        write_png(self.path("labels", name), labels.astype(np.uint16))
        write_png(self.path("overlays", name), draw_labels(image, labels, fill_alpha=0.0))
        with atomic_open(self.path("measurements", name), "w") as f:
            writer = csv.DictWriter(f, fieldnames=MEASUREMENT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                for row in measurements
            )
        self.results.extend(coco_instance_results(image_id, labels, measurements))
        self.images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": int(labels.shape[0]),
                "width": int(labels.shape[1]),
                "num_tiles": int(prediction.num_tiles),
            }
        )
        return len(measurements)

    def close(self) -> None:
        """Write ``coco_instances_results.json`` and ``coco_images.json``."""
        with atomic_open(os.path.join(self.output_dir, "coco_instances_results.json"), "w") as f:
            json.dump(self.results, f)
        with atomic_open(os.path.join(self.output_dir, "coco_images.json"), "w") as f:
            json.dump(
                {
                    "images": self.images,
                    "categories": [{"id": NUCLEUS_CATEGORY_ID, "name": "nucleus"}],
                },
                f,
                indent=1,
            )
