"""A folder of images + integer label images (the StarDist / Cellpose layout) converted to the
prepared layout of :mod:`maskrcnnpp.data.dsb2018`, and registered like DSB2018: what
``datasets/prepare_label_folder.py`` runs (:func:`prepare_and_report` is the whole tool).

Input::

    IMAGES/<stem>.<ext>            the images: PNG, TIFF, JPEG, BMP (any that read_image_rgb reads;
                                   multi-channel TIFFs with ``channel``, see below)
    LABELS/<stem><suffix>.<ext>    one label image per image, PNG or TIFF, same size: 0 is
                                   background, every other value k the pixels of nucleus k

``<suffix>`` is empty or one of ``_masks`` (Cellpose), ``_mask``, ``_labels``, ``_label``: a
label file pairs with the image whose stem is its own stem, or its stem less the suffix.
``LABELS`` may be ``IMAGES`` itself (Cellpose's ``x.png`` beside ``x_masks.png``): there, a
file whose stem is another file's stem plus a suffix is a label image. Labels are 8-, 16- or
32-bit integers (also a floating-point file holding whole numbers only); ids need not be
consecutive. Files of other types, hidden files and sub-folders are ignored.

Output ``OUT``, the layout :mod:`maskrcnnpp.data.dsb2018` reads::

    OUT/annotations/instances_<split>.json   COCO instances, category "nucleus" (id 1), exact
                                             RLE masks, pixel areas, tight boxes; one
                                             instance per label id, by increasing id
    OUT/semantic/<split>/<stem>.png          uint8, 0 background, 1 nucleus (label > 0)
    OUT/splits.json                          the split used, in the --split-file format
    OUT/channel_images/<stem>.tif            with ``channel`` only: that channel of each image
                                             (pixels as stored, 16-bit stays 16-bit), which
                                             the JSON's file_name points to

Channels: multi-channel TIFFs (CYX or YXC, ImageJ hyperstacks, OME-TIFF) need ``channel``
(``--channel``), the nuclear channel's 0-based index or name, as ``tools/predict.py
--channel`` (:func:`maskrcnnpp.data.image_io.read_image_rgb`); without it they are left out
with a list of their channels. With it, every image's chosen channel (of an RGB image the
colour, a grayscale image as it is) is written to ``OUT/channel_images`` and trained on as a
grayscale image, the same pixels predict reads; the JSON's ``info.description`` names the
channel.

Splits: a split file is JSON ``{"train": ["stem", ...], "val": [...], ...}`` (image stems;
a stem may be in several splits; images in none are not converted). Without one, every
image is in split ``train``, or, with ``val_fraction`` F > 0, round(F * n) of the n paired
images (at least 1) form split ``val``: those first in a fixed order of a hash of the stem,
so the split of an image does not depend on the numpy or Python version.

Checks. Always errors (nothing written): a folder that is missing or holds no image / label
file, no image with a label image, a bad split file. Per image, reported on stderr with the
file and the reason and the image left out (``strict``: an error, nothing written): an image
without a label image, a label image without an image, two files of one stem, a file that
cannot be read, a label image of another size than its image, with several channels (RGB),
with values that are not whole numbers, or negative. A label id whose pixels are not one
8-connected region is reported too; it stays one instance (``strict``: an error), or each
region becomes an instance with ``split_disconnected`` (then not reported, only counted).
Images whose labels are all 0 are kept, as negative examples.

Every check runs before anything is written; then each file is written atomically, the JSON
files last. ``register_label_folder(OUT, name=NAME)``, or the config key
``DATASETS.LABEL_FOLDERS: ["NAME=OUT"]`` of ``setup_cfg``, registers ``NAME_<split>`` and
``NAME_sem_seg_<split>`` for every split of OUT.
"""

import io
import json
import os
import sys
import time
from collections import defaultdict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import tifffile
from detectron2.data import DatasetCatalog, MetadataCatalog
from scipy import ndimage
from tqdm import tqdm

from ..structures.rle import label_image_to_rles
from ..utils.atomic_io import atomic_write_bytes, atomic_write_png, atomic_write_text
from .image_io import Channel, ImageReadError, parse_channel, read_image_rgb, read_image_unchanged
from .prepared import (
    DatasetFormatError,
    Instance,
    Problem,
    coco_instances,
    instances_json_path,
    parallel_map,
    prepare_output_folder,
    register_prepared_splits,
    run_locked,
    semantic_mask_path,
    split_names_to_register,
    stable_order_key,
    warn_unlisted_annotations,
)

__all__ = [
    "prepare_label_folder",
    "prepare_and_report",
    "register_label_folder",
    "register_label_folders_of_config",
]

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABEL_EXTENSIONS = (".png", ".tif", ".tiff")
LABEL_SUFFIXES = ("_masks", "_mask", "_labels", "_label")
SPLITS_FILENAME = "splits.json"
CHANNEL_IMAGES_DIRNAME = "channel_images"
_PREPARE_SCRIPT = "datasets/prepare_label_folder.py"
# 8-connectivity: the regions nuclei are counted in everywhere in the project.
_CONNECTIVITY = np.ones((3, 3), bool)


class LabelPair(NamedTuple):
    stem: str
    image_path: str
    label_path: str


class ConvertedPair(NamedTuple):
    """One image converted in memory (nothing written yet)."""

    image_id: str  # the stem
    height: int  # 0 when the image is left out (see ``problems``)
    width: int
    instances: List[Instance]
    problems: List[Problem]  # why it is left out, or label ids in several regions (kept)
    split_ids: int  # label ids split into their regions (split_disconnected)


# ---------------------------------------------------------------------------------------
# pairing and splits


def _files(folder: str, extensions: Sequence[str]) -> List[str]:
    return sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".")
        and name.lower().endswith(extensions)
        and os.path.isfile(os.path.join(folder, name))
    )


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def _candidate_stems(label_stem: str) -> List[str]:
    """The image stems a label file of stem ``label_stem`` may belong to, preferred first."""
    return [label_stem] + [label_stem[: -len(s)] for s in LABEL_SUFFIXES if label_stem.endswith(s)]


def _listed_folder(folder: str, what: str, extensions: Sequence[str]) -> List[str]:
    if not os.path.isdir(folder):
        raise DatasetFormatError(folder, f"no such folder (the {what})")
    names = _files(folder, extensions)
    if not names:
        raise DatasetFormatError(
            folder, f"holds no {what} ({', '.join(extensions)} files directly inside it)"
        )
    return names


def pair_files(
    images_dir: str, labels_dir: str
) -> Tuple[List[LabelPair], List[str], List[Problem]]:
    """Pair each image of ``images_dir`` with its label image in ``labels_dir`` by stem.

    Returns:
        (pairs sorted by stem, every image stem found, problems: images without a label image,
        label images without an image, stems with several images or label images).

    Raises:
        DatasetFormatError: a folder is missing or holds no image / label file.
    """
    same_folder = os.path.abspath(images_dir) == os.path.abspath(labels_dir)
    image_names = _listed_folder(images_dir, "images", IMAGE_EXTENSIONS)
    if same_folder:
        stems = {_stem(n) for n in image_names}
        label_names = [
            n
            for n in image_names
            if n.lower().endswith(LABEL_EXTENSIONS)
            and any(c in stems for c in _candidate_stems(_stem(n))[1:])
        ]
        image_names = [n for n in image_names if n not in set(label_names)]
    else:
        label_names = _listed_folder(labels_dir, "label images", LABEL_EXTENSIONS)

    images_of: Dict[str, List[str]] = defaultdict(list)
    for name in image_names:
        images_of[_stem(name)].append(os.path.join(images_dir, name))
    labels_of: Dict[str, List[str]] = defaultdict(list)
    problems: List[Problem] = []
    for name in label_names:
        path = os.path.join(labels_dir, name)
        candidates = _candidate_stems(_stem(name))
        stem = next((c for c in candidates if c in images_of), None)
        if stem is None:
            wanted = " or ".join(f"{c}.*" for c in candidates)
            problems.append(
                Problem(path, f"label image without an image (no {wanted} in {images_dir})")
            )
        else:
            labels_of[stem].append(path)

    pairs = []
    for stem in sorted(images_of):
        images, labels = images_of[stem], labels_of.get(stem, [])
        if len(images) > 1:
            problems.append(
                Problem(images[0], f"{len(images)} images of stem {stem!r}: {', '.join(images)}")
            )
        elif not labels:
            suffixes = "/".join(LABEL_SUFFIXES)
            problems.append(
                Problem(
                    images[0],
                    f"image without a label image (no {stem}[{suffixes}].png/.tif in {labels_dir})",
                )
            )
        elif len(labels) > 1:
            problems.append(
                Problem(
                    labels[0],
                    f"{len(labels)} label images for image {images[0]}: {', '.join(labels)}",
                )
            )
        else:
            pairs.append(LabelPair(stem, images[0], labels[0]))
    return pairs, sorted(images_of), problems


def read_split_file(path: str, image_stems: Sequence[str]) -> Dict[str, List[str]]:
    """Read a split file: JSON ``{"<split>": ["<image stem>", ...], ...}``.

    Raises:
        DatasetFormatError: not such a JSON object, a split name that is not a plain word, a
            stem listed twice in a split, or a stem of no image.
    """
    try:
        with open(path, encoding="utf-8") as f:
            splits = json.load(f)
    except OSError as e:
        raise DatasetFormatError(path, f"cannot read the split file ({e.strerror})") from e
    except ValueError as e:
        raise DatasetFormatError(path, f"not valid JSON ({e})") from e
    expected = 'a JSON object {"train": ["<image stem>", ...], "val": [...]}'
    if not isinstance(splits, dict) or not splits:
        raise DatasetFormatError(path, f"must be {expected}")
    known = set(image_stems)
    for split, stems in splits.items():
        if not split or not split.replace("_", "").replace("-", "").isalnum():
            raise DatasetFormatError(path, f"split name {split!r}: use letters, digits, '_' or '-'")
        if not isinstance(stems, list) or not all(isinstance(s, str) for s in stems):
            raise DatasetFormatError(
                path, f"split {split!r} must be a list of image stems ({expected})"
            )
        for stem in stems:
            if stem not in known:
                raise DatasetFormatError(
                    path, f"split {split!r} names {stem!r}, which is no image stem"
                )
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise DatasetFormatError(path, f"split {split!r} lists {', '.join(twice)} twice")
    return splits


def default_split(stems: Sequence[str], val_fraction: float = 0.0) -> Dict[str, List[str]]:
    """Every stem in ``train``; with ``val_fraction`` > 0, round(fraction * n) of them (at
    least one, at most n - 1), first in :func:`stable_order_key` order, in ``val``.

    Returns:
        split name -> sorted stems.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetFormatError("--val-fraction", f"{val_fraction} is not in [0, 1)")
    if val_fraction == 0.0:
        return {"train": sorted(stems)}
    if len(stems) < 2:
        raise DatasetFormatError("--val-fraction", f"needs at least 2 images, found {len(stems)}")
    count = min(max(int(np.floor(val_fraction * len(stems) + 0.5)), 1), len(stems) - 1)
    shuffled = sorted(stems, key=stable_order_key)
    return {"train": sorted(shuffled[count:]), "val": sorted(shuffled[:count])}


# ---------------------------------------------------------------------------------------
# one image (runs in worker processes)


def _check_label_values(labels: np.ndarray) -> Optional[str]:
    """Why ``labels`` (one channel) cannot be label ids, or None."""
    if labels.dtype == np.bool_:
        return None
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating):
            return f"pixels of type {labels.dtype}: label ids must be integers"
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            y, x = np.argwhere(bad)[0]
            return (
                f"not integer-valued ({labels.dtype}; pixel (x={x}, y={y}) is {labels[y, x]}): "
                "label ids must be whole numbers"
            )
    low = labels.min()
    if low < 0:
        return f"negative values (minimum {low}): label ids are >= 0, 0 for the background"
    return None


def read_label_ids(path: str) -> np.ndarray:
    """Read a label image as (H, W) ``int64`` ids.

    Raises:
        ImageReadError: unreadable, several channels, not whole numbers, negative.
    """
    labels = read_image_unchanged(path)
    if labels.ndim == 3:
        kind = {2: "gray + alpha", 3: "RGB", 4: "RGBA"}[labels.shape[2]]
        raise ImageReadError(
            path,
            f"{labels.shape[2]} channels ({kind}): a label image has one channel of integer ids "
            "(0 background, k for nucleus k); a colour picture of labels cannot be converted, "
            "save the label image itself (e.g. as a 16-bit PNG or TIFF)",
        )
    reason = _check_label_values(labels)
    if reason:
        raise ImageReadError(path, reason)
    return labels.astype(np.int64)


def instance_label_image(
    labels: np.ndarray, split_disconnected: bool
) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """Number the instances of a label image 1..K.

    Args:
        labels: (H, W) non-negative integer ids, 0 background.
        split_disconnected: give each 8-connected region of an id its own number.

    Returns:
        ((H, W) int32 with the ids in increasing order renumbered 1..K, an id's regions in
        raster order of their first pixel when split, (id, number of regions) of every id
        whose pixels form several regions).
    """
    ids, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape).astype(np.int32)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        dense += 1
    boxes = ndimage.find_objects(dense)
    regions_of = {}  # number -> (its regions in its box, how many), of the disconnected ids
    for number, box in enumerate(boxes, start=1):
        regions, count = ndimage.label(dense[box] == number, structure=_CONNECTIVITY)
        if count > 1:
            regions_of[number] = (regions, count)
    disconnected = [(int(ids[number]), count) for number, (_, count) in regions_of.items()]
    if not (split_disconnected and disconnected):
        return dense, disconnected
    result = np.zeros_like(dense)
    next_number = 1
    for number, box in enumerate(boxes, start=1):
        view = result[box]  # a view: writing into it writes into result
        regions, count = regions_of.get(number, (dense[box] == number, 1))
        for region in range(1, count + 1):
            view[regions == region] = next_number
            next_number += 1
    return result, disconnected


def instances_of(numbered: np.ndarray) -> List[Instance]:
    """Instances (exact RLE, area, tight box) of a label image numbered 1..K, in order."""
    rles = label_image_to_rles(numbered)
    areas = np.bincount(numbered.ravel(), minlength=len(rles) + 1)
    instances = []
    for k, (rle, box) in enumerate(zip(rles, ndimage.find_objects(numbered)), start=1):
        rows, cols = box
        bbox = [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]
        instances.append(Instance(rle, int(areas[k]), [int(v) for v in bbox]))
    return instances


def convert_pair(job: Tuple[LabelPair, bool, Channel]) -> ConvertedPair:
    """Read and check one image (its ``channel``) and its label image; write nothing."""
    pair, split_disconnected, channel = job

    def left_out(path: str, reason: str) -> ConvertedPair:
        return ConvertedPair(pair.stem, 0, 0, [], [Problem(path, reason)], 0)

    try:
        height, width = read_image_rgb(pair.image_path, channel).shape[:2]
        labels = read_label_ids(pair.label_path)
    except ImageReadError as e:
        return left_out(e.path, e.reason)
    if labels.shape != (height, width):
        return left_out(
            pair.label_path,
            f"label image is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image "
            f"{pair.image_path} is {width}x{height}",
        )
    numbered, disconnected = instance_label_image(labels, split_disconnected)
    problems = []
    if disconnected and not split_disconnected:
        listed = ", ".join(f"{i} ({n} regions)" for i, n in disconnected[:10])
        more = f" and {len(disconnected) - 10} more" if len(disconnected) > 10 else ""
        problems.append(
            Problem(
                pair.label_path,
                f"{len(disconnected)} label id(s) in several 8-connected regions: {listed}{more}; "
                "each is one instance, unless --split-disconnected makes each region one (a "
                "binary mask instead of a label image reads this way)",
            )
        )
    split_ids = len(disconnected) if split_disconnected else 0
    return ConvertedPair(pair.stem, height, width, instances_of(numbered), problems, split_ids)


def semantic_mask(converted: ConvertedPair) -> np.ndarray:
    """(H, W) uint8, 1 where any instance is, from the instances' RLEs."""
    if not converted.instances:
        return np.zeros((converted.height, converted.width), np.uint8)
    union = mask_util.merge([dict(i.rle) for i in converted.instances], intersect=False)
    return np.ascontiguousarray(mask_util.decode(union))


def _write_channel_image(image_path: str, channel: Channel, folder: str, stem: str) -> str:
    """Write ``channel`` of an image (pixels as stored) as ``folder/<stem>.tif``, atomically;
    returns that path."""
    encoded = io.BytesIO()
    plane = read_image_unchanged(image_path, channel)
    tifffile.imwrite(encoded, plane, photometric="minisblack", compression="zlib")
    path = os.path.join(folder, f"{stem}.tif")
    atomic_write_bytes(path, encoded.getvalue())
    return path


# ---------------------------------------------------------------------------------------
# driver


def _warn(prefix: str, problems: Sequence[Problem]) -> None:
    for problem in problems:
        tqdm.write(f"{prefix}{problem.path}: {problem.reason}", file=sys.stderr)


def prepare_label_folder(
    images_dir: str,
    labels_dir: Optional[str],
    out: str,
    *,
    split_file: Optional[str] = None,
    val_fraction: float = 0.0,
    strict: bool = False,
    split_disconnected: bool = False,
    workers: int = 2,
    channel: Channel = None,
) -> dict:
    """Convert a folder of images + label images into the prepared layout under ``out``.

    Args:
        images_dir: the images.
        labels_dir: the label images (None: ``images_dir``, the Cellpose layout).
        out: output folder, created if needed (refused when read-only).
        split_file: JSON ``{"<split>": [stems]}``; None: see ``val_fraction``.
        val_fraction: without a split file, the fraction of images in split ``val`` (0: all
            in ``train``).
        strict: any per-image problem is an error (nothing written).
        split_disconnected: each 8-connected region of a label id is an instance.
        channel: the nuclear channel (0-based index or name, see
            :func:`~maskrcnnpp.data.image_io.parse_channel`): each image's is written to
            ``out/channel_images/<stem>.tif`` and the JSON points there; None: the images
            are used as they are (multi-channel TIFFs are left out).
        workers: processes reading the images (1: in this process).

    Returns:
        dict: ``splits`` (split -> {"images", "instances", "json_file"}), ``left_out`` (the
        problems of the files left out), ``disconnected`` (label ids found in several
        regions, kept as one), ``split_ids`` (ids split into regions), ``splits_file``,
        ``channel_images`` (the folder of the channel images, None without ``channel``).

    Raises:
        DatasetFormatError: a missing or empty folder, no pairs, a bad split file; under
            ``strict``, any problem (all listed on stderr first).
    """
    labels_dir = images_dir if labels_dir is None else labels_dir
    pairs, image_stems, left_out = pair_files(images_dir, labels_dir)
    if not pairs:
        _warn("warning: ", left_out)
        raise DatasetFormatError(
            images_dir,
            f"no image has a label image in {labels_dir} (they pair by file stem; see above)",
        )
    if split_file is not None:
        splits = read_split_file(split_file, image_stems)
    else:
        splits = default_split([p.stem for p in pairs], val_fraction)

    listed = {stem for stems in splits.values() for stem in stems}
    try:
        channel = parse_channel(channel)
    except ValueError as e:
        raise DatasetFormatError("--channel", str(e)) from None
    channel_dir = os.path.join(out, CHANNEL_IMAGES_DIRNAME)
    if channel is not None and os.path.realpath(channel_dir) == os.path.realpath(images_dir):
        raise DatasetFormatError(
            out, f"the channel images would overwrite {images_dir}: choose another --out"
        )
    jobs = [(p, split_disconnected, channel) for p in pairs if p.stem in listed]
    converted: Dict[str, ConvertedPair] = {}
    disconnected: List[Problem] = []
    for result in parallel_map(convert_pair, jobs, workers, "read"):
        converted[result.image_id] = result
        (disconnected if result.height else left_out).extend(result.problems)
    if strict and (left_out or disconnected):
        _warn("error: ", left_out + disconnected)
        raise DatasetFormatError(
            images_dir,
            f"{len(left_out) + len(disconnected)} problem(s), listed above: an error with "
            "--strict, nothing written",
        )
    _warn("warning: left out ", left_out)
    _warn("warning: ", disconnected)
    if not any(r.height for r in converted.values()):
        raise DatasetFormatError(
            images_dir, "no image could be converted (see above): nothing written"
        )
    unlisted = sorted({p.stem for p in pairs} - listed)
    if unlisted:
        tqdm.write(
            f"note: {len(unlisted)} paired image(s) are in no split of {split_file}, not "
            f"converted: {', '.join(unlisted[:5])}{', ...' if len(unlisted) > 5 else ''}",
            file=sys.stderr,
        )
    for stem in listed - set(converted):  # listed, but without a pair: reported above
        converted[stem] = ConvertedPair(stem, 0, 0, [], [], 0)

    # Every check is done: write.
    prepare_output_folder(out)
    for split, stems in splits.items():
        for stem in stems:
            if converted[stem].height:
                atomic_write_png(
                    semantic_mask_path(out, split, stem), semantic_mask(converted[stem])
                )
    warn_unlisted_annotations(
        out, splits, lambda split: f"not in {SPLITS_FILENAME} of this conversion"
    )
    image_path = {p.stem: p.image_path for p in pairs}
    if channel is not None:
        image_path = {
            stem: _write_channel_image(image_path[stem], channel, channel_dir, stem)
            for stem in sorted(converted)
            if converted[stem].height
        }
    summary = {}
    for split, stems in splits.items():
        coco = coco_instances(
            stems,
            converted,
            image_path.get,
            out,
            f"images {os.path.abspath(images_dir)} + labels {os.path.abspath(labels_dir)}, "
            f"split '{split}' (prepare_label_folder.py)"
            + (
                ""
                if channel is None
                else f"; channel {channel!r} of each image, in {CHANNEL_IMAGES_DIRNAME}/"
            ),
        )
        json_file = instances_json_path(out, split)
        atomic_write_text(json_file, json.dumps(coco, separators=(",", ":")))
        summary[split] = {
            "images": len(coco["images"]),
            "instances": len(coco["annotations"]),
            "json_file": json_file,
        }
    splits_file = os.path.join(out, SPLITS_FILENAME)
    atomic_write_text(splits_file, json.dumps(splits, indent=1) + "\n")
    return {
        "splits": summary,
        "left_out": left_out,
        "disconnected": disconnected,
        "split_ids": sum(r.split_ids for r in converted.values()),
        "splits_file": splits_file,
        "channel_images": None if channel is None else channel_dir,
    }


def prepare_and_report(images_dir: str, labels_dir: Optional[str], out: str, **options) -> int:
    """:func:`prepare_label_folder`, then a summary on stdout: the whole of
    ``datasets/prepare_label_folder.py`` after its argument parsing.

    Returns:
        int: exit status, 0, 1 on a :class:`DatasetFormatError`, 2 when another conversion
        is writing into ``out`` (said on stderr).
    """
    start = time.perf_counter()
    status, summary = run_locked(
        out, lambda: prepare_label_folder(images_dir, labels_dir, out, **options)
    )
    if status:
        return status
    for split, counts in summary["splits"].items():
        print(
            f"{split}: {counts['images']} images, {counts['instances']} instances -> {counts['json_file']}"
        )
    if not any(counts["instances"] for counts in summary["splits"].values()):
        print(
            f"warning: every label image of {labels_dir or images_dir} is empty (all 0): no "
            "nucleus to train on; are these the right label images (0 background, k > 0 "
            "nucleus k)?",
            file=sys.stderr,
        )
    if summary["left_out"]:
        print(f"left out: {len(summary['left_out'])} file(s) with problems (listed on stderr)")
    if summary["disconnected"]:
        print(
            f"kept as one instance: the label ids in several regions of {len(summary['disconnected'])} "
            "label image(s) (listed on stderr; --split-disconnected splits them)"
        )
    if summary["split_ids"]:
        print(
            f"split into their regions: {summary['split_ids']} label id(s) (--split-disconnected)"
        )
    if summary["channel_images"]:
        print(f"channel {options['channel']} of each image: {summary['channel_images']}")
    print(f"splits: {summary['splits_file']}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------
# registration

# name -> the datasets register_label_folder registered under it (registered again on a
# second call, e.g. a second setup_cfg in one process).
_REGISTERED: Dict[str, List[str]] = {}


def _not_prepared_error(
    dataset_name: str, missing: str, root: str, split: str
) -> FileNotFoundError:
    return FileNotFoundError(
        f"Dataset '{dataset_name}' is not prepared: {missing} does not exist. Prepare it with\n"
        f"    python {_PREPARE_SCRIPT} --images <image folder> --labels <label folder> --out {root}\n"
        f"(split '{split}' comes from --split-file or --val-fraction; see docs/own_nuclei.md)."
    )


def register_label_folder(root: str, *, name: str) -> List[str]:
    """Register a folder written by ``datasets/prepare_label_folder.py``, as
    :func:`~maskrcnnpp.data.dsb2018.register_dsb2018` registers DSB2018.

    Registers ``<name>_<split>`` (instances, evaluator "coco") and ``<name>_sem_seg_<split>``
    (semantic, evaluator "sem_seg", ignore label 255) for every
    ``root/annotations/instances_<split>.json``, and for the standard splits train / val / test
    even when they are not prepared (loading one then raises a :class:`FileNotFoundError`
    naming the missing file and the command that prepares it). A second call with the same
    name registers the folder anew (its splits may have changed). Data is read only when a
    dataset is loaded.

    Returns:
        the registered dataset names.

    Raises:
        ValueError: a dataset of that name is registered already, not by this function.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    splits = split_names_to_register(root)
    names = [f"{name}{kind}_{split}" for split in splits for kind in ("", "_sem_seg")]
    taken = sorted(set(names) & set(DatasetCatalog.list()) - set(_REGISTERED.get(name, ())))
    if taken:
        raise ValueError(
            f"cannot register label folder {root} as '{name}': {', '.join(taken)} is already "
            "registered (not a label folder); choose another name"
        )
    for dataset_name in _REGISTERED.pop(name, ()):  # pop: the caller may have removed them
        DatasetCatalog.pop(dataset_name, None)
        MetadataCatalog.pop(dataset_name, None)
    _REGISTERED[name] = register_prepared_splits(
        root, splits, name=name, not_prepared=_not_prepared_error
    )
    return list(_REGISTERED[name])


def register_label_folders_of_config(cfg) -> List[str]:
    """Register each ``"NAME=FOLDER"`` of ``cfg.DATASETS.LABEL_FOLDERS`` with
    :func:`register_label_folder` (``setup_cfg`` calls this, so that ``DATASETS.TRAIN`` /
    ``TEST`` may name ``NAME_<split>``). A relative FOLDER is relative to the working directory.

    Returns:
        the registered dataset names.

    Raises:
        ValueError: an entry that is not ``NAME=FOLDER``; as :func:`register_label_folder`.
    """
    registered = []
    for entry in cfg.DATASETS.get("LABEL_FOLDERS", ()):
        name, sep, root = str(entry).partition("=")
        name, root = name.strip(), root.strip()
        if not (sep and root and name) or any(c.isspace() for c in name):
            raise ValueError(
                f"DATASETS.LABEL_FOLDERS: {entry!r} must be NAME=FOLDER, e.g. "
                "'mynuclei=datasets/mynuclei' (registers mynuclei_<split>, mynuclei_sem_seg_<split>)"
            )
        registered += register_label_folder(root, name=name)
    return registered


# ---------------------------------------------------------------------------------------
# an example folder
