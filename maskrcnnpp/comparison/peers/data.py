"""
The images a peer (StarDist, Cellpose) trains on and predicts, written from a registered
dataset so that they are exactly what our models read: the record's image through
:func:`read_image_rgb` and, for training, its instance annotations painted into a label image
(where true masks overlap, the annotation listed first keeps the pixel, as in
:class:`NucleiEvaluator`'s ground truth).

Layout of an exported split (what ``tools/peers/peer_common.py`` reads)::

    <folder>/index.json        {"dataset", "fingerprint", "images": [{"image_id", "file_name",
                                "image": "images/<k>.tif", "labels": "labels/<k>.tif" or null}]}
    <folder>/images/<k>.tif    (H, W, 3) uint8 RGB
    <folder>/labels/<k>.tif    (H, W) int32 label image, 0 the background (with labels only)

The folder's name holds a fingerprint of the records (image ids, file names, sizes and
annotation counts), so a dataset whose content changes is exported anew; it is written under a
temporary name and renamed when complete.
"""

import hashlib
import json
import os
import shutil

import numpy as np
import tifffile
from detectron2.data import DatasetCatalog

from ...data.image_io import read_image_rgb
from ...data.synthetic_nuclei import _cache_root as cache_root
from ...structures.label_image import coco_segmentations_to_label_image

__all__ = ["export_split", "dataset_fingerprint", "default_cache_dir"]


def dataset_fingerprint(records):
    """A hash of what identifies the records' images and annotations."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(
            json.dumps(
                [
                    record["image_id"],
                    record["file_name"],
                    record["height"],
                    record["width"],
                    len(record.get("annotations", [])),
                ]
            ).encode()
        )
    return digest.hexdigest()[:16]


def default_cache_dir():
    """``$MASKRCNNPP_CACHE/peer_data`` (default ``~/.cache/maskrcnnpp/peer_data``)."""
    return os.path.join(str(cache_root()), "peer_data")


def export_split(dataset_name, cache_dir=None, *, with_labels):
    """
    Write the images (and with ``with_labels`` the label images) of a registered instance
    dataset into ``<cache_dir>/<dataset>-<fingerprint>-<images|labels>/``, unless it is there.

    Returns:
        str: that folder.
    """
    records = DatasetCatalog.get(dataset_name)
    if not records:
        raise ValueError(f"dataset '{dataset_name}' has no images")
    fingerprint = dataset_fingerprint(records)
    folder = os.path.join(
        cache_dir or default_cache_dir(),
        f"{dataset_name}-{fingerprint}-{'labels' if with_labels else 'images'}",
    )
    if os.path.isfile(os.path.join(folder, "index.json")):
        return folder
    temporary = f"{folder}.tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(os.path.join(temporary, "images"))
    if with_labels:
        os.makedirs(os.path.join(temporary, "labels"))
    entries = []
    for k, record in enumerate(records):
        image = read_image_rgb(record["file_name"])
        if image.shape[:2] != (record["height"], record["width"]):
            raise ValueError(
                f"{record['file_name']}: image of size {image.shape[:2]}, the dataset "
                f"'{dataset_name}' says {(record['height'], record['width'])}"
            )
        entry = {
            "image_id": record["image_id"],
            "file_name": record["file_name"],
            "image": f"images/{k:05d}.tif",
            "labels": None,
        }
        tifffile.imwrite(os.path.join(temporary, entry["image"]), image, compression="zlib")
        if with_labels:
            labels = coco_segmentations_to_label_image(
                [a["segmentation"] for a in record.get("annotations", [])],
                record["height"],
                record["width"],
            )
            entry["labels"] = f"labels/{k:05d}.tif"
            tifffile.imwrite(
                os.path.join(temporary, entry["labels"]),
                labels.astype(np.int32),
                compression="zlib",
            )
        entries.append(entry)
    with open(os.path.join(temporary, "index.json"), "w") as f:
        json.dump(
            {"dataset": dataset_name, "fingerprint": fingerprint, "images": entries}, f, indent=1
        )
    try:
        os.rename(temporary, folder)
    except OSError:  # a concurrent export of the same records renamed its copy first
        shutil.rmtree(temporary)
    return folder
