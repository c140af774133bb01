"""
The prepared-dataset layer: the one layout every nuclei source is converted into, the
machinery the conversions share, and its registration in Detectron2's catalogs.

The layout (written by ``datasets/prepare_dsb2018.py`` and ``datasets/prepare_label_folder.py``)::

    <root>/annotations/instances_<split>.json   COCO instances (compressed RLE masks, exact
                                                area, tight box), one category "nucleus" (id 1)
    <root>/semantic/<split>/<image stem>.png    uint8 semantic masks, 0 background, 1 nucleus

:func:`register_prepared_splits` registers, for each split, ``<name>_<split>`` (instance dicts
for Mask R-CNN(++), evaluator_type "coco") and ``<name>_sem_seg_<split>`` (``file_name`` +
``sem_seg_file_name`` for semantic models, evaluator_type "sem_seg", ignore_label 255). The
sources' readers are :mod:`.dsb2018_conversion` (the Kaggle download) and :mod:`.label_folder`
(a folder of images and label images).
"""

import contextlib
import functools
import glob
import hashlib
import json
import os
import sys
from multiprocessing import Pool
from typing import Callable, Dict, List, NamedTuple, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from tqdm import tqdm

from ..structures.rle import mask_to_annotation_fields
from ..utils.cli import ignore_interrupts
from ..utils.folder_lock import FolderInUseError, exclusive_folder

__all__ = [
    "CATEGORY",
    "DatasetFormatError",
    "Instance",
    "NotPreparedError",
    "Problem",
    "STANDARD_SPLITS",
    "coco_instances",
    "instances_json_path",
    "load_prepared_instances",
    "load_prepared_sem_seg",
    "mask_to_instance",
    "parallel_map",
    "prepare_output_folder",
    "prepared_split_names",
    "register_prepared_splits",
    "report_problem",
    "run_locked",
    "semantic_mask_path",
    "split_names_to_register",
    "stable_order_key",
    "warn_unlisted_annotations",
]

# registered even when not prepared, so that configs can name them
STANDARD_SPLITS = ("train", "val", "test")
THING_CLASSES = ["nucleus"]
STUFF_CLASSES = ["background", "nucleus"]
SEM_SEG_IGNORE_LABEL = 255
CATEGORY = {"id": 1, "name": "nucleus", "supercategory": "nucleus"}

# (dataset name, missing file, root, split) -> the error that says how to prepare it.
NotPreparedError = Callable[[str, str, str, str], Exception]


def annotations_dir(root: str) -> str:
    return os.path.join(root, "annotations")


def instances_json_path(root: str, split: str) -> str:
    return os.path.join(annotations_dir(root), f"instances_{split}.json")


def prepared_split_names(root: str) -> List[str]:
    """Splits that have an ``instances_<split>.json`` under ``root``, sorted."""
    pattern = os.path.join(glob.escape(annotations_dir(root)), "instances_*.json")
    return [
        os.path.basename(p)[len("instances_") : -len(".json")] for p in sorted(glob.glob(pattern))
    ]


def semantic_dir(root: str, split: str) -> str:
    return os.path.join(root, "semantic", split)


def semantic_mask_path(root: str, split: str, image_stem: str) -> str:
    """The semantic mask of the image whose file name (without extension) is ``image_stem``."""
    return os.path.join(semantic_dir(root, split), f"{image_stem}.png")


def load_prepared_instances(
    root: str, split: str, dataset_name: str, not_prepared: NotPreparedError
) -> List[Dict]:
    """Instance dicts of one split of a folder in the prepared layout, in Detectron2's standard
    format; ``not_prepared`` makes the error raised when a file is missing.

    Returns:
        list[dict]: one per image (images without nuclei included) with ``file_name``,
        ``height``, ``width``, ``image_id`` and ``annotations``: dicts with ``segmentation``
        (RLE dict), ``bbox`` [x, y, w, h], ``bbox_mode`` ``BoxMode.XYWH_ABS``,
        ``category_id`` 0, ``iscrowd`` 0.
    """
    json_file = instances_json_path(root, split)
    if not os.path.isfile(json_file):
        raise not_prepared(dataset_name, json_file, root, split)
    return load_coco_json(json_file, root, dataset_name=dataset_name)


def load_prepared_sem_seg(
    root: str, split: str, dataset_name: str, not_prepared: NotPreparedError
) -> List[Dict]:
    """Semantic dicts of one split of a folder in the prepared layout.

    Returns:
        list[dict]: one per image with ``file_name``, ``sem_seg_file_name`` (uint8 PNG,
        0 background, 1 nucleus), ``height``, ``width``, ``image_id``.
    """
    json_file = instances_json_path(root, split)
    if not os.path.isfile(json_file):
        raise not_prepared(dataset_name, json_file, root, split)
    with open(json_file, encoding="utf-8") as f:
        images = json.load(f)["images"]
    dataset_dicts = []
    for image in images:
        image_stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
        sem_seg_file = semantic_mask_path(root, split, image_stem)
        if not os.path.isfile(sem_seg_file):
            raise not_prepared(dataset_name, sem_seg_file, root, split)
        dataset_dicts.append(
            {
                "file_name": os.path.join(root, image["file_name"]),
                "sem_seg_file_name": sem_seg_file,
                "height": image["height"],
                "width": image["width"],
                "image_id": image["id"],
            }
        )
    return dataset_dicts


def register_prepared_splits(
    root: str,
    splits: Sequence[str],
    *,
    name: str,
    not_prepared: NotPreparedError,
) -> List[str]:
    """Register ``<name>_<split>`` (instances) and ``<name>_sem_seg_<split>`` (semantic) for
    each of ``splits`` of ``root``, a folder in the prepared layout (``annotations/`` and
    ``semantic/``, as written by ``datasets/prepare_dsb2018.py`` or
    ``datasets/prepare_label_folder.py``). Data is read only when a dataset is loaded.

    Args:
        not_prepared: makes the error raised when a dataset is loaded and one of its files
            is missing (its message says which command prepares it).

    Returns:
        the registered dataset names.
    """
    registered = []
    for split in splits:
        loaders_and_metadata = {
            f"{name}_{split}": (
                load_prepared_instances,
                dict(
                    thing_classes=list(THING_CLASSES),
                    thing_dataset_id_to_contiguous_id={1: 0},
                    evaluator_type="coco",
                    json_file=instances_json_path(root, split),
                    image_root=root,
                ),
            ),
            f"{name}_sem_seg_{split}": (
                load_prepared_sem_seg,
                dict(
                    stuff_classes=list(STUFF_CLASSES),
                    ignore_label=SEM_SEG_IGNORE_LABEL,
                    evaluator_type="sem_seg",
                    # the nuclei metrics read instance ground truth from the instance twin
                    instance_dataset_name=f"{name}_{split}",
                    image_root=root,
                    sem_seg_root=semantic_dir(root, split),
                ),
            ),
        }
        for dataset_name, (loader, metadata) in loaders_and_metadata.items():
            DatasetCatalog.register(
                dataset_name, functools.partial(loader, root, split, dataset_name, not_prepared)
            )
            MetadataCatalog.get(dataset_name).set(**metadata)
            registered.append(dataset_name)
    return registered


class DatasetFormatError(ValueError):
    """A file of the input dataset at fault (raised under ``--strict`` and for bad lists)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class Problem(NamedTuple):
    """One input file reported and left out."""

    path: str
    reason: str


class Instance(NamedTuple):
    rle: dict  # {"size": [H, W], "counts": str}
    area: int
    bbox: List[int]  # [x, y, w, h], COCO convention (w = x_max - x_min + 1)


def stable_order_key(image_id: str) -> str:
    """Sort key of a deterministic shuffle. A hash, not a seeded RNG: the order of an id
    never depends on the other ids or on the numpy / Python version."""
    return hashlib.sha256(image_id.encode("utf-8")).hexdigest()


def mask_to_instance(mask: np.ndarray) -> Instance:
    """(H, W) bool, not empty -> compressed RLE, pixel area, tight XYWH box."""
    return Instance(*mask_to_annotation_fields(mask))


def json_file_name(image_file: str, out: str) -> str:
    """The ``file_name`` of an image in the JSON: relative to ``out`` when the image lies
    inside it, absolute otherwise."""
    image_file = os.path.abspath(image_file)
    try:
        relative = os.path.relpath(image_file, os.path.abspath(out))
    except ValueError:  # different drives (Windows)
        return image_file
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return image_file
    return relative.replace(os.sep, "/")


def coco_instances(
    image_ids: Sequence[str],
    converted: Dict[str, NamedTuple],
    image_path: Callable[[str], str],
    out: str,
    description: str,
) -> dict:
    """COCO instances dict of one split (images that could not be read are left out).

    Args:
        image_ids: the split's images, in order (COCO ids 1, 2, ...).
        converted: image id -> its conversion (anything with ``height``, 0 for an image left
            out, ``width`` and ``instances``).
        image_path: image id -> the image file.
        out: the output folder (image file names are relative to it when inside it).
        description: the JSON's ``info.description``.
    """
    images, annotations = [], []
    for image_id in image_ids:
        result = converted[image_id]
        if result.height == 0:
            continue
        coco_image_id = len(images) + 1
        images.append(
            {
                "id": coco_image_id,
                "file_name": json_file_name(image_path(image_id), out),
                "height": result.height,
                "width": result.width,
            }
        )
        for instance in result.instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": coco_image_id,
                    "category_id": CATEGORY["id"],
                    "segmentation": instance.rle,
                    "area": instance.area,
                    "bbox": instance.bbox,
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }


def report_problem(problem: Problem, strict: bool) -> None:
    """Raise ``problem`` as a :class:`DatasetFormatError` under ``strict``; else warn that the
    file is left out."""
    if strict:
        raise DatasetFormatError(problem.path, problem.reason)
    tqdm.write(f"warning: left out {problem.path}: {problem.reason}", file=sys.stderr)


def parallel_map(function, jobs, workers: int, description: str):
    """Yield ``function(job)`` in job order with a progress bar, over ``workers`` processes."""
    progress = dict(total=len(jobs), desc=description, unit="img", file=sys.stderr)
    if workers <= 1:
        yield from tqdm(map(function, jobs), **progress)
        return
    with Pool(workers, initializer=ignore_interrupts) as pool:  # Ctrl-C: the main process says so
        yield from tqdm(pool.imap(function, jobs, chunksize=4), **progress)


def _remove_stale_temporaries(out: str) -> None:
    """Remove the temporary files (``.<name>.<random>.tmp``, see ``atomic_open``) that a
    killed run left in the folders this tool writes; only one conversion writes into ``out``
    at a time."""
    folders = [out, annotations_dir(out)]
    folders += glob.glob(os.path.join(glob.escape(semantic_dir(out, "")), "*"))
    stale = [
        p for folder in folders for p in glob.glob(os.path.join(glob.escape(folder), ".*.tmp"))
    ]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    if stale:
        tqdm.write(
            f"note: removed {len(stale)} temporary file(s) left by an interrupted run "
            f"(e.g. {stale[0]})",
            file=sys.stderr,
        )


def warn_unlisted_annotations(out: str, splits, gone: Callable[[str], str]) -> None:
    """Warn about each ``instances_<split>.json`` under ``out`` of a split not in ``splits``:
    it stays registered with the content of an earlier conversion. ``gone(split)`` says why
    the split is not listed any more."""
    for split in prepared_split_names(out):
        path = instances_json_path(out, split)
        if split not in splits:
            tqdm.write(
                f"warning: {path} is of split '{split}', which is no longer listed "
                f"({gone(split)}): left as it was, and still registered; delete it if the "
                "split is retired",
                file=sys.stderr,
            )


def prepare_output_folder(out: str) -> None:
    """Create ``out`` if needed, refuse it when read-only (also by its permission bits alone:
    root ignores them otherwise) and remove the temporary files a killed run left in it.

    Raises:
        DatasetFormatError: ``out`` cannot be created or is read-only.
    """
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise DatasetFormatError(out, f"cannot create the output folder ({e.strerror})") from e
    if not os.access(out, os.W_OK) or not os.stat(out).st_mode & 0o222:
        raise DatasetFormatError(out, "output folder is read-only; pass --out to write elsewhere")
    _remove_stale_temporaries(out)


def run_locked(out: str, convert: Callable[[], dict]):
    """
    Run ``convert()`` holding ``out`` (one conversion per output folder at a time), the part
    the preparation tools share.

    Returns:
        (int, dict or None): the exit status and ``convert()``'s summary: (0, summary);
        (1, None) on a :class:`DatasetFormatError`, (2, None) when another conversion is
        writing into ``out``, each said on stderr.
    """
    try:
        with exclusive_folder(out, "--out"):
            return 0, convert()
    except FolderInUseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2, None
    except DatasetFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1, None


def split_names_to_register(root: str) -> List[str]:
    """The standard splits (registered even when not prepared, so that configs can name
    them), then every other split prepared under ``root``."""
    found = prepared_split_names(root)
    return list(STANDARD_SPLITS) + [s for s in found if s not in STANDARD_SPLITS]
