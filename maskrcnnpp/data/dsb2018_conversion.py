#!/usr/bin/env python
"""Conversion of the 2018 Data Science Bowl nuclei data (Kaggle layout) for Detectron2: what
``datasets/prepare_dsb2018.py`` runs (:func:`prepare_and_report` is the whole tool).

Input ``root``, exactly the Kaggle download::

    root/stage1_train/<id>/images/<id>.png     one image per folder
    root/stage1_train/<id>/masks/*.png         one binary PNG per nucleus, same size
    root/<split>.txt                           optional: one image id a line, per split

Output ``out`` (default ``root``), the layout :mod:`maskrcnnpp.data.dsb2018` reads::

    out/annotations/instances_<split>.json    COCO instances, one category "nucleus" (id 1),
                                              compressed RLE masks, exact area, tight bbox
    out/semantic/<split>/<id>.png             uint8, 0 background, 1 nucleus (union of masks)
    out/<split>.txt                           only when root has no split lists (see below)

Every ``root/<split>.txt`` is a split. With none, a deterministic split is drawn, stratified
by imaging modality (dark-background fluorescence, light-background grayscale brightfield,
light-background colour histology, told apart by median brightness and colour spread), about
50/20/30 % train/val/test as in the UNet++ paper (335/134/201 of 670), and the lists are
saved to ``out/<split>.txt``.

Image ``file_name`` in the JSON is relative to ``out`` when the image lies inside it, and
absolute otherwise. Both resolve with ``image_root = out``.

A mask that is unreadable or empty is reported on stderr with its path and left out; an image
that cannot be read, or with a mask of another size than the image, is reported and left out
as a whole. With ``strict`` the first such problem raises :class:`DatasetFormatError`. Images
without any nucleus are kept as negatives. All outputs are written atomically; the temporary
files of a killed run are removed by the next one. An ``annotations/instances_<split>.json``
whose split has no list any more is reported and left as it is.
"""

import contextlib
import functools
import json
import os
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..utils.atomic_io import atomic_write_png, atomic_write_text
from .dsb2018 import (
    KAGGLE_IMAGES_DIRNAME,
    kaggle_image_dir,
    kaggle_image_path,
)
from .image_io import ImageReadError, read_image_rgb, read_mask
from .prepared import (
    DatasetFormatError,
    Instance,
    Problem,
    coco_instances,
    instances_json_path,
    mask_to_instance,
    parallel_map,
    prepare_output_folder,
    report_problem,
    run_locked,
    semantic_dir,
    semantic_mask_path,
    stable_order_key,
    warn_unlisted_annotations,
)

# Default split when DIR has no <split>.txt: fraction of each modality per split.
DEFAULT_SPLIT_FRACTIONS = (("train", 0.5), ("val", 0.2), ("test", 0.3))
# Median gray level below which the background is dark (fluorescence). DSB2018 stage 1:
# fluorescence medians <= 44, brightfield and histology >= 136.
DARK_BACKGROUND_MAX = 90.0
# Mean |channel - gray| above which a light image is colour (stained histology); exactly 0
# for the grayscale brightfield images stored as RGB, >= 4.4 for histology.
COLOUR_SPREAD_MIN = 2.0


class ConvertedImage(NamedTuple):
    image_id: str
    height: int  # 0 when the image could not be read
    width: int
    instances: List[Instance]
    problems: List[Problem]


class ConvertJob(NamedTuple):
    image_id: str
    root: str  # of the Kaggle download
    semantic_paths: List[str]  # where to write the semantic mask (one per split holding it)
    strict: bool


# ---------------------------------------------------------------------------------------
# layout, splits


def find_image_ids(root: str) -> List[str]:
    """Sorted ids of the folders under ``root/stage1_train``."""
    images_dir = os.path.join(root, KAGGLE_IMAGES_DIRNAME)
    if not os.path.isdir(images_dir):
        raise DatasetFormatError(
            images_dir,
            "no such folder: --root must hold the Kaggle layout "
            f"{KAGGLE_IMAGES_DIRNAME}/<id>/images/<id>.png and {KAGGLE_IMAGES_DIRNAME}/<id>/masks/*.png",
        )
    ids = sorted(
        name
        for name in os.listdir(images_dir)
        if not name.startswith(".") and os.path.isdir(os.path.join(images_dir, name))
    )
    if not ids:
        raise DatasetFormatError(images_dir, "holds no image folder")
    return ids


def read_split_lists(root: str, image_ids: Sequence[str]) -> Dict[str, List[str]]:
    """Read every ``root/<split>.txt`` (one image id a line; blank lines ignored).

    Returns:
        split name -> image ids in file order; empty when ``root`` has no ``.txt`` file.

    Raises:
        DatasetFormatError: a list names an id that is not under ``stage1_train`` or names an
            id twice.
    """
    known = set(image_ids)
    splits = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not name.endswith(".txt") or not os.path.isfile(path):
            continue
        ids: List[str] = []
        seen = set()
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                image_id = line.strip()
                if not image_id:
                    continue
                where = f"{path}:{line_number}"
                if image_id not in known:
                    raise DatasetFormatError(
                        where, f"image id {image_id!r} has no folder under {KAGGLE_IMAGES_DIRNAME}/"
                    )
                if image_id in seen:
                    raise DatasetFormatError(where, f"image id {image_id!r} is listed twice")
                seen.add(image_id)
                ids.append(image_id)
        splits[name[: -len(".txt")]] = ids
    return splits


def imaging_modality(image: np.ndarray) -> str:
    """Classify a DSB2018 image by simple statistics.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        "fluorescence" (dark background), "brightfield" (light, grayscale) or "histology"
        (light, coloured stain).
    """
    pixels = image.astype(np.float32)
    gray = pixels.mean(axis=2)
    if float(np.median(gray)) <= DARK_BACKGROUND_MAX:
        return "fluorescence"
    colour_spread = float(np.abs(pixels - gray[:, :, None]).mean())
    return "histology" if colour_spread >= COLOUR_SPREAD_MIN else "brightfield"


def stratified_split(modality_by_id: Dict[str, str]) -> Dict[str, List[str]]:
    """Deterministic split, stratified by modality, with ``DEFAULT_SPLIT_FRACTIONS``.

    Within each modality the ids are ordered by a hash of the id and cut into consecutive
    parts of round-half-up(fraction * n) ids (the last split takes the remainder).

    Returns:
        split name -> sorted image ids.
    """
    splits: Dict[str, List[str]] = {name: [] for name, _ in DEFAULT_SPLIT_FRACTIONS}
    for modality in sorted(set(modality_by_id.values())):
        ids = sorted((i for i, m in modality_by_id.items() if m == modality), key=stable_order_key)
        start = 0
        for k, (name, fraction) in enumerate(DEFAULT_SPLIT_FRACTIONS):
            if k == len(DEFAULT_SPLIT_FRACTIONS) - 1:
                count = len(ids) - start
            else:
                count = min(int(np.floor(fraction * len(ids) + 0.5)), len(ids) - start)
            splits[name].extend(ids[start : start + count])
            start += count
    return {name: sorted(ids) for name, ids in splits.items()}


# ---------------------------------------------------------------------------------------
# per-image conversion (runs in worker processes)


def _modality_of(args: Tuple[str, str]) -> Tuple[str, Optional[str], Optional[Problem]]:
    image_id, path = args
    try:
        return image_id, imaging_modality(read_image_rgb(path)), None
    except ImageReadError as e:
        return image_id, None, Problem(e.path, e.reason)


def convert_image(job: ConvertJob) -> ConvertedImage:
    """Read one image folder: instances from its masks and the semantic mask (written)."""
    path = kaggle_image_path(job.root, job.image_id)
    try:
        height, width = read_image_rgb(path).shape[:2]
    except ImageReadError as e:
        return ConvertedImage(job.image_id, 0, 0, [], [Problem(e.path, e.reason)])

    problems: List[Problem] = []
    instances: List[Instance] = []
    semantic = np.zeros((height, width), np.uint8)
    masks_dir = os.path.join(kaggle_image_dir(job.root, job.image_id), "masks")
    wrong_size = 0
    if os.path.isdir(masks_dir):
        mask_names = sorted(n for n in os.listdir(masks_dir) if n.lower().endswith(".png"))
    else:
        mask_names = []
        problems.append(Problem(masks_dir, "no masks folder: image kept without instances"))
    for name in mask_names:
        mask_path = os.path.join(masks_dir, name)
        try:
            mask = read_mask(mask_path)
        except ImageReadError as e:
            problems.append(Problem(mask_path, e.reason))
            continue
        if mask.shape != (height, width):
            problems.append(
                Problem(
                    mask_path,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {path} "
                    f"is {width}x{height}",
                )
            )
            wrong_size += 1
            continue
        if not mask.any():
            problems.append(Problem(mask_path, "empty mask (no foreground pixel)"))
            continue
        instances.append(mask_to_instance(mask))
        semantic |= mask
    if wrong_size:
        # Its nuclei would be background in training: the image is left out, not kept with
        # the masks that fit.
        problems.append(
            Problem(
                path,
                f"image left out: {wrong_size} of its {len(mask_names)} masks are not "
                f"{width}x{height} (WxH), so their nuclei would be taken as background",
            )
        )
        for semantic_path in job.semantic_paths:  # of an earlier conversion
            with contextlib.suppress(FileNotFoundError):
                os.remove(semantic_path)
        return ConvertedImage(job.image_id, 0, 0, [], problems)
    if not (job.strict and problems):
        for semantic_path in job.semantic_paths:
            atomic_write_png(semantic_path, semantic)
    return ConvertedImage(job.image_id, height, width, instances, problems)


# ---------------------------------------------------------------------------------------
# driver


def prepare_dsb2018(
    root: str, out: Optional[str] = None, *, strict: bool = False, workers: int = 2
):
    """Convert ``root`` (Kaggle layout) into COCO JSON + semantic masks under ``out``.

    Args:
        root: folder holding ``stage1_train/`` and optional ``<split>.txt`` lists.
        out: output folder (default ``root``); refused when it is read-only, also by its
            permission bits alone (a read-only download stays untouched even for root).
        strict: raise on the first bad image or mask instead of reporting and skipping it.
        workers: processes used to read masks (1: in this process).

    Returns:
        dict: split name -> {"images": int, "instances": int, "json_file": str}.

    Raises:
        DatasetFormatError: bad layout or split list; under ``strict``, the first bad file.
    """
    out = root if out is None else out
    image_ids = find_image_ids(root)
    prepare_output_folder(out)
    splits = read_split_lists(root, image_ids)
    if not splits:
        jobs = [(i, kaggle_image_path(root, i)) for i in image_ids]
        modality_by_id = {}
        for image_id, modality, problem in parallel_map(_modality_of, jobs, workers, "modality"):
            if problem is not None:
                report_problem(problem, strict)
            else:
                modality_by_id[image_id] = modality
        splits = stratified_split(modality_by_id)
        for split, ids in splits.items():
            atomic_write_text(os.path.join(out, f"{split}.txt"), "".join(i + "\n" for i in ids))
        counts = {
            m: list(modality_by_id.values()).count(m) for m in sorted(set(modality_by_id.values()))
        }
        tqdm.write(
            f"no split lists in {root}: wrote a split stratified by {counts}", file=sys.stderr
        )

    splits_of_image: Dict[str, List[str]] = {}
    for split, ids in splits.items():
        for image_id in ids:
            splits_of_image.setdefault(image_id, []).append(split)
    unlisted = len(image_ids) - len(splits_of_image)
    if unlisted:
        tqdm.write(
            f"note: {unlisted} image folders of {KAGGLE_IMAGES_DIRNAME}/ are in no split list "
            f"({', '.join(f'{s}.txt' for s in splits)}): not converted",
            file=sys.stderr,
        )
    jobs = [
        ConvertJob(
            image_id=image_id,
            root=root,
            semantic_paths=[semantic_mask_path(out, s, image_id) for s in image_splits],
            strict=strict,
        )
        for image_id, image_splits in sorted(splits_of_image.items())
    ]
    converted: Dict[str, ConvertedImage] = {}
    for result in parallel_map(convert_image, jobs, workers, "convert"):
        for problem in result.problems:
            report_problem(problem, strict)
        converted[result.image_id] = result
    for split in splits:  # also a split without images (after --strict's checks)
        os.makedirs(semantic_dir(out, split), exist_ok=True)

    warn_unlisted_annotations(out, splits, lambda s: f"{os.path.join(root, s + '.txt')} is gone")
    summary = {}
    for split, ids in splits.items():
        coco = coco_instances(
            ids,
            converted,
            functools.partial(kaggle_image_path, root),
            out,
            f"DSB2018 {KAGGLE_IMAGES_DIRNAME}, split '{split}' (prepare_dsb2018.py)",
        )
        json_file = instances_json_path(out, split)
        atomic_write_text(json_file, json.dumps(coco, separators=(",", ":")))
        summary[split] = {
            "images": len(coco["images"]),
            "instances": len(coco["annotations"]),
            "json_file": json_file,
        }
    return summary


def prepare_and_report(
    root: str, out: Optional[str] = None, *, strict: bool = False, workers: int = 2
) -> int:
    """:func:`prepare_dsb2018`, then one line per split on stdout: the whole of
    ``datasets/prepare_dsb2018.py`` after its argument parsing.

    Returns:
        int: exit status, 0, 1 on a :class:`DatasetFormatError`, 2 when another conversion
        is writing into the output folder (said on stderr).
    """
    start = time.perf_counter()
    status, summary = run_locked(
        root if out is None else out,
        lambda: prepare_dsb2018(root, out, strict=strict, workers=workers),
    )
    if status:
        return status
    for split, counts in summary.items():
        print(
            f"{split}: {counts['images']} images, {counts['instances']} instances -> {counts['json_file']}"
        )
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
