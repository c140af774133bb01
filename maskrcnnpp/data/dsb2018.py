"""DSB2018 nuclei in Detectron2's DatasetCatalog and MetadataCatalog.

``datasets/prepare_dsb2018.py`` converts the Kaggle download into::

    <root>/annotations/instances_<split>.json   COCO instances (RLE masks), "nucleus" id 1
    <root>/semantic/<split>/<image id>.png      uint8 semantic masks, 0 background, 1 nucleus

For every such split this module registers

* ``dsb2018_<split>``: instance dicts (``annotations`` with RLE ``segmentation``, ``bbox`` in
  ``BoxMode.XYWH_ABS``, ``category_id`` 0) for Mask R-CNN(++); evaluator_type "coco";
* ``dsb2018_sem_seg_<split>``: ``file_name`` + ``sem_seg_file_name`` for semantic models;
  evaluator_type "sem_seg", ignore_label 255.

The layout is not DSB2018's own: ``datasets/prepare_label_folder.py``
(:mod:`maskrcnnpp.data.label_folder`) writes it for a folder of images + label images, and
:func:`register_prepared_splits` registers any such folder the same way.

Importing it registers the default root ``$DETECTRON2_DATASETS/dsb2018`` (DETECTRON2_DATASETS
defaults to ``./datasets``). The standard splits train / val / test are registered even when
they are not prepared, so configs can name them; loading one that is missing raises a
:class:`FileNotFoundError` naming the missing file and the command that prepares it. Images
without nuclei are kept (negative examples); whether training drops them is up to
``DATALOADER.FILTER_EMPTY_ANNOTATIONS``.
"""

import functools
import glob
import json
import os
from typing import Callable, Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "register_dsb2018",
    "register_prepared_splits",
    "DSB2018_STANDARD_SPLITS",
    "DSB2018_THING_CLASSES",
]

DSB2018_STANDARD_SPLITS = ("train", "val", "test")
DSB2018_THING_CLASSES = ["nucleus"]
DSB2018_STUFF_CLASSES = ["background", "nucleus"]
SEM_SEG_IGNORE_LABEL = 255
_PREPARE_SCRIPT = "datasets/prepare_dsb2018.py"


# The layout, here only: the conversions (maskrcnnpp.data.dsb2018_conversion, .label_folder)
# write it, the loaders below read it.
KAGGLE_IMAGES_DIRNAME = "stage1_train"  # of the Kaggle download: <id>/images/<id>.png, <id>/masks/


def kaggle_image_dir(root: str, image_id: str) -> str:
    """Folder of one image of the Kaggle download (``images/<id>.png`` and ``masks/*.png``)."""
    return os.path.join(root, KAGGLE_IMAGES_DIRNAME, image_id)


def kaggle_image_path(root: str, image_id: str) -> str:
    return os.path.join(kaggle_image_dir(root, image_id), "images", f"{image_id}.png")


def annotations_dir(root: str) -> str:
    return os.path.join(root, "annotations")


def instances_json_path(root: str, split: str) -> str:
    return os.path.join(annotations_dir(root), f"instances_{split}.json")


def prepared_split_names(root: str) -> List[str]:
    """Splits that have an ``instances_<split>.json`` under ``root``, sorted."""
    pattern = os.path.join(glob.escape(annotations_dir(root)), "instances_*.json")
    return [os.path.basename(p)[len("instances_") : -len(".json")] for p in sorted(glob.glob(pattern))]


def semantic_dir(root: str, split: str) -> str:
    return os.path.join(root, "semantic", split)


def semantic_mask_path(root: str, split: str, image_stem: str) -> str:
    """The semantic mask of the image whose file name (without extension) is ``image_stem``."""
    return os.path.join(semantic_dir(root, split), f"{image_stem}.png")


def _not_prepared_error(
    dataset_name: str, missing: str, root: str, split: str
) -> FileNotFoundError:
    if os.path.isdir(os.path.join(root, KAGGLE_IMAGES_DIRNAME)):
        command = f"python {_PREPARE_SCRIPT} --root {root}"
    else:
        command = f"python {_PREPARE_SCRIPT} --root <folder holding stage1_train/> --out {root}"
    return FileNotFoundError(
        f"Dataset '{dataset_name}' is not prepared: {missing} does not exist. Prepare it with\n"
        f"    {command}\n"
        f"(split '{split}' is the list <root>/{split}.txt, or part of the default "
        f"train/val/test split drawn when the root has no split list; see datasets/README.md)."
    )


# (dataset name, missing file, root, split) -> the error that says how to prepare it.
NotPreparedError = Callable[[str, str, str, str], Exception]


def split_names_to_register(root: str) -> List[str]:
    """The standard splits (registered even when not prepared, so that configs can name
    them), then every other split prepared under ``root``."""
    found = prepared_split_names(root)
    return list(DSB2018_STANDARD_SPLITS) + [s for s in found if s not in DSB2018_STANDARD_SPLITS]


def load_dsb2018_instances(
    root: str, split: str, dataset_name: str, not_prepared: NotPreparedError = _not_prepared_error
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


def load_dsb2018_sem_seg(
    root: str, split: str, dataset_name: str, not_prepared: NotPreparedError = _not_prepared_error
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


def register_dsb2018(root: str, *, name: str = "dsb2018") -> List[str]:
    """Register the DSB2018 splits prepared under ``root``.

    Registers ``<name>_<split>`` (instances) and ``<name>_sem_seg_<split>`` (semantic) for
    the standard splits train / val / test and for every other
    ``root/annotations/instances_<split>.json``. Data is read only when a dataset is loaded.

    Args:
        root: the output folder of ``datasets/prepare_dsb2018.py``.
        name: prefix of the dataset names; use another one to register a second copy
            beside the default ``$DETECTRON2_DATASETS/dsb2018``.

    Returns:
        the registered dataset names.
    """
    root = os.path.expanduser(os.fspath(root))
    return register_prepared_splits(root, split_names_to_register(root), name=name)


def register_prepared_splits(
    root: str,
    splits: Sequence[str],
    *,
    name: str,
    not_prepared: NotPreparedError = _not_prepared_error,
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
                load_dsb2018_instances,
                dict(
                    thing_classes=list(DSB2018_THING_CLASSES),
                    thing_dataset_id_to_contiguous_id={1: 0},
                    evaluator_type="coco",
                    json_file=instances_json_path(root, split),
                    image_root=root,
                ),
            ),
            f"{name}_sem_seg_{split}": (
                load_dsb2018_sem_seg,
                dict(
                    stuff_classes=list(DSB2018_STUFF_CLASSES),
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


_DEFAULT_ROOT = os.path.join(
    os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "dsb2018"
)
register_dsb2018(_DEFAULT_ROOT)
