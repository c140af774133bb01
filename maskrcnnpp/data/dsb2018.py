"""DSB2018 nuclei in Detectron2's DatasetCatalog and MetadataCatalog.

``datasets/prepare_dsb2018.py`` (:mod:`.dsb2018_conversion`) converts the Kaggle download
into the prepared layout (:mod:`.prepared`)::

    <root>/annotations/instances_<split>.json   COCO instances (RLE masks), "nucleus" id 1
    <root>/semantic/<split>/<image id>.png      uint8 semantic masks, 0 background, 1 nucleus

For every such split this module registers

* ``dsb2018_<split>``: instance dicts (``annotations`` with RLE ``segmentation``, ``bbox`` in
  ``BoxMode.XYWH_ABS``, ``category_id`` 0) for Mask R-CNN(++); evaluator_type "coco";
* ``dsb2018_sem_seg_<split>``: ``file_name`` + ``sem_seg_file_name`` for semantic models;
  evaluator_type "sem_seg", ignore_label 255.

The layout is not DSB2018's own: ``datasets/prepare_label_folder.py``
(:mod:`maskrcnnpp.data.label_folder`) writes it for a folder of images + label images, and
:func:`~maskrcnnpp.data.prepared.register_prepared_splits` registers any such folder the same
way.

Importing it registers the default root ``$DETECTRON2_DATASETS/dsb2018`` (DETECTRON2_DATASETS
defaults to ``./datasets``). The standard splits train / val / test are registered even when
they are not prepared, so configs can name them; loading one that is missing raises a
:class:`FileNotFoundError` naming the missing file and the command that prepares it. Images
without nuclei are kept (negative examples); whether training drops them is up to
``DATALOADER.FILTER_EMPTY_ANNOTATIONS``.
"""

import os
from typing import List

from .prepared import register_prepared_splits, split_names_to_register

__all__ = ["KAGGLE_IMAGES_DIRNAME", "kaggle_image_path", "register_dsb2018"]

_PREPARE_SCRIPT = "datasets/prepare_dsb2018.py"


# the Kaggle download's layout (the prepared layout is maskrcnnpp/data/prepared.py's)
KAGGLE_IMAGES_DIRNAME = "stage1_train"  # of the Kaggle download: <id>/images/<id>.png, <id>/masks/


def kaggle_image_dir(root: str, image_id: str) -> str:
    """Folder of one image of the Kaggle download (``images/<id>.png`` and ``masks/*.png``)."""
    return os.path.join(root, KAGGLE_IMAGES_DIRNAME, image_id)


def kaggle_image_path(root: str, image_id: str) -> str:
    return os.path.join(kaggle_image_dir(root, image_id), "images", f"{image_id}.png")


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
    return register_prepared_splits(
        root, split_names_to_register(root), name=name, not_prepared=_not_prepared_error
    )


_DEFAULT_ROOT = os.path.join(
    os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "dsb2018"
)
register_dsb2018(_DEFAULT_ROOT)
