"""
Deterministic synthetic nuclei: the embedded default dataset, so the main job runs with no
download.

Every image is drawn from its own seed, so image ``k`` of a dataset (seed ``seed_base + k``) is
the same whatever the number of images. An image holds touching and overlapping nuclei
(ellipses of random size, orientation and eccentricity with a smooth radial perturbation) in
one of two looks: fluorescence (dark background, bright textured nuclei) or brightfield /
stained histology (light stained background, dark purple-blue nuclei). Where nuclei overlap,
the later one occludes the earlier one, so ground-truth masks never overlap (as in DSB2018).

Importing this module registers, in Detectron2's catalogs:

- ``nuclei_synth_train`` / ``nuclei_synth_val``: instances (COCO json with RLE masks,
  ``evaluator_type="coco"``);
- ``nuclei_synth_sem_seg_train`` / ``nuclei_synth_sem_seg_val``: the semantic twins
  (0/1 PNG masks, ``evaluator_type="sem_seg"``).

The files are generated on first use under ``$MASKRCNNPP_CACHE`` (default
``~/.cache/maskrcnnpp``), resolved at call time, in a folder whose name hashes the parameters
and the generator (this file's source, numpy and OpenCV versions), so a changed generator
never reuses stale data. Generation is atomic, and safe when several processes ask at once.
"""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import load_coco_json

from ..structures.rle import mask_to_annotation_fields

__all__ = [
    "SYNTHETIC_NUCLEI_SPLITS",
    "generate_synthetic_nuclei_image",
    "write_synthetic_nuclei_dataset",
    "ensure_synthetic_nuclei",
    "register_synthetic_nuclei",
    "write_example_label_folder",
]

# Registered splits: number of images and the seed of image 0 (image k uses seed_base + k).
SYNTHETIC_NUCLEI_SPLITS = {
    "train": {"num_images": 64, "seed_base": 0, "image_size": 256},
    "val": {"num_images": 16, "seed_base": 1_000_000, "image_size": 256},
}
LOOKS = ("fluorescence", "brightfield")
# Instances left with fewer pixels than this after occlusion and cropping are dropped.
MIN_INSTANCE_AREA = 10
# Image k of a written dataset has no nucleus at all when k % EMPTY_IMAGE_PERIOD == 0.
EMPTY_IMAGE_PERIOD = 16

_RADIUS_RANGE = (4.0, 20.0)  # equivalent radius (sqrt(a * b)) of one nucleus, pixels
_MAX_NUCLEI = 60
_MAX_COVERAGE = 0.5  # cap on the summed nucleus area as a fraction of the image area

# Optical densities (R, G, B) of the stains, for the Beer-Lambert brightfield rendering.
_HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
_EOSIN_OD = np.array([0.07, 0.99, 0.11])


@dataclass
class _Nucleus:
    """One nucleus: an ellipse (center, semi-axes, orientation) with a radial perturbation
    ``1 + sum_k amplitudes[k] * cos((k + 2) * phi + phases[k])`` of its boundary."""

    center_y: float
    center_x: float
    semi_major: float
    semi_minor: float
    angle: float
    amplitudes: np.ndarray
    phases: np.ndarray


def _draw_nuclei(rng, height, width, num_nuclei):
    """
    Draw the layout of one image: sizes around an image-wide typical radius, and positions
    that put part of the nuclei against (touching or overlapping) an earlier one.

    Returns:
        list[_Nucleus], in drawing order (later ones occlude earlier ones).
    """
    typical_radius = float(np.exp(rng.uniform(np.log(5.0), np.log(14.0))))
    if num_nuclei is None:
        capacity = int(_MAX_COVERAGE * height * width / (np.pi * typical_radius**2))
        max_count = max(6, min(_MAX_NUCLEI, capacity))
        if rng.random() < 0.15:
            num_nuclei = int(rng.integers(1, 5))
        else:
            num_nuclei = int(rng.integers(5, max_count + 1))
    clustering = rng.uniform(0.3, 0.85)  # probability that a nucleus leans on an earlier one

    nuclei = []
    for _ in range(num_nuclei):
        radius = float(np.clip(typical_radius * np.exp(rng.normal(0.0, 0.2)), *_RADIUS_RANGE))
        axis_ratio = rng.uniform(0.55, 1.0)
        semi_major, semi_minor = radius / np.sqrt(axis_ratio), radius * np.sqrt(axis_ratio)
        if nuclei and rng.random() < clustering:
            neighbour = nuclei[int(rng.integers(len(nuclei)))]
            neighbour_radius = np.sqrt(neighbour.semi_major * neighbour.semi_minor)
            distance = (radius + neighbour_radius) * rng.uniform(0.65, 1.05)
            direction = rng.uniform(0.0, 2.0 * np.pi)
            center_y = neighbour.center_y + distance * np.sin(direction)
            center_x = neighbour.center_x + distance * np.cos(direction)
        else:
            center_y, center_x = rng.uniform(0.0, height), rng.uniform(0.0, width)
        nuclei.append(
            _Nucleus(
                center_y=float(center_y),
                center_x=float(center_x),
                semi_major=float(semi_major),
                semi_minor=float(semi_minor),
                angle=float(rng.uniform(0.0, np.pi)),
                amplitudes=rng.uniform(0.0, 0.07, size=3) / np.array([1.0, 1.4, 1.8]),
                phases=rng.uniform(0.0, 2.0 * np.pi, size=3),
            )
        )
    return nuclei


def _rasterize(nuclei, height, width):
    """
    Paint the nuclei in order, each later one over the earlier ones.

    Returns:
        labels (H, W) int32: 0 background, i + 1 where nucleus i is visible.
        radial_position (H, W) float32: for nucleus pixels, the distance to the own center
            relative to the own boundary (0 at the center, 1 on the boundary).
    """
    labels = np.zeros((height, width), np.int32)
    radial_position = np.zeros((height, width), np.float32)
    for index, nucleus in enumerate(nuclei):
        reach = nucleus.semi_major * (1.0 + nucleus.amplitudes.sum()) + 1.0
        y0, y1 = (
            max(0, int(nucleus.center_y - reach)),
            min(height, int(nucleus.center_y + reach) + 2),
        )
        x0, x1 = (
            max(0, int(nucleus.center_x - reach)),
            min(width, int(nucleus.center_x + reach) + 2),
        )
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - nucleus.center_y
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - nucleus.center_x
        cos_a, sin_a = np.cos(nucleus.angle), np.sin(nucleus.angle)
        u = (dx * cos_a + dy * sin_a) / nucleus.semi_major
        v = (-dx * sin_a + dy * cos_a) / nucleus.semi_minor
        phi = np.arctan2(v, u)
        boundary = np.ones_like(phi)
        for order, (amplitude, phase) in enumerate(zip(nucleus.amplitudes, nucleus.phases), 2):
            boundary += amplitude * np.cos(order * phi + phase)
        relative = np.sqrt(u * u + v * v) / boundary
        inside = relative <= 1.0
        labels[y0:y1, x0:x1][inside] = index + 1
        radial_position[y0:y1, x0:x1][inside] = relative[inside]
    return labels, radial_position


def _clean_labels(labels, num_nuclei):
    """
    Keep the largest connected piece of each visible nucleus; drop nuclei left with fewer
    than MIN_INSTANCE_AREA pixels (their pixels become background).

    Returns:
        labels (H, W) int32, relabelled 1..N in drawing order; N.
    """
    cleaned = np.zeros_like(labels)
    next_label = 1
    for label in range(1, num_nuclei + 1):
        ys, xs = np.nonzero(labels == label)
        if len(ys) < MIN_INSTANCE_AREA:
            continue
        y0, x0 = ys.min(), xs.min()
        crop = (labels[y0 : ys.max() + 1, x0 : xs.max() + 1] == label).astype(np.uint8)
        num_pieces, pieces, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=4)
        if num_pieces > 2:
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            crop = (pieces == largest).astype(np.uint8)
        if int(crop.sum()) < MIN_INSTANCE_AREA:
            continue
        cleaned[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]][crop > 0] = next_label
        next_label += 1
    return cleaned, next_label - 1


def _smooth_noise(rng, shape, sigma, sigma_across=None, angle=0.0):
    """
    Gaussian-filtered white noise with unit standard deviation, shape (H, W) float32.
    With ``sigma_across`` the filter is anisotropic (fibres along ``angle``, radians).
    """
    height, width = shape
    noise = rng.standard_normal(shape).astype(np.float32)
    if sigma_across is None:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    else:
        noise = cv2.GaussianBlur(
            noise, (0, 0), sigmaX=sigma, sigmaY=sigma_across, borderType=cv2.BORDER_REFLECT
        )
        rotation = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), np.degrees(angle), 1.0)
        noise = cv2.warpAffine(noise, rotation, (width, height), borderMode=cv2.BORDER_REFLECT)
    return noise / max(float(noise.std()), 1e-6)


def _illumination_gradient(rng, height, width, strength):
    """A linear brightness ramp in a random direction, mean 1, shape (H, W) float32."""
    direction = rng.uniform(0.0, 2.0 * np.pi)
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width - 0.5
    return 1.0 + strength * (np.cos(direction) * xs + np.sin(direction) * ys)


def _per_nucleus(values, labels):
    """Broadcast per-nucleus values (N,) onto pixels: (H, W), 0 on the background."""
    return np.concatenate([[0.0], values]).astype(np.float32)[labels]


def _render_fluorescence(rng, labels, radial_position, num_instances):
    """Fluorescence look, as float32 (H, W, 3) in [0, 1] before blur and noise."""
    height, width = labels.shape
    gain = rng.uniform(0.3, 1.0)  # some acquisitions are dim, as in DSB2018
    brightness = gain * rng.uniform(0.45, 1.0, size=num_instances)
    chromatin = _smooth_noise(rng, (height, width), sigma=rng.uniform(0.8, 2.2))
    texture_strength = rng.uniform(0.08, 0.3)
    edge_falloff = rng.uniform(0.15, 0.5)
    nucleus = _per_nucleus(brightness, labels)
    nucleus *= (1.0 - edge_falloff * radial_position**3) * (1.0 + texture_strength * chromatin)
    background = rng.uniform(0.01, 0.07) * (1.0 + 0.3 * _smooth_noise(rng, (height, width), 12.0))
    gray = np.where(labels > 0, background + np.clip(nucleus, 0.0, None), background)
    gray *= _illumination_gradient(rng, height, width, rng.uniform(0.0, 0.6))
    if rng.random() < 0.7:
        tint = np.ones(3, np.float32)  # grayscale replicated, as most DSB2018 fluorescence
    else:
        tint = rng.uniform(0.1, 1.0, size=3).astype(np.float32)
        tint[int(rng.integers(3))] = 1.0
    return gray[:, :, None] * tint


def _render_brightfield(rng, labels, radial_position, num_instances):
    """Brightfield / stained-histology look (Beer-Lambert), float32 (H, W, 3) in [0, 1]."""
    height, width = labels.shape
    nucleus_od = _HEMATOXYLIN_OD + rng.normal(0.0, 0.06, size=3)
    nucleus_od = np.clip(nucleus_od, 0.05, None) / np.linalg.norm(nucleus_od)
    eosin_od = _EOSIN_OD / np.linalg.norm(_EOSIN_OD)
    hematoxylin_od = _HEMATOXYLIN_OD / np.linalg.norm(_HEMATOXYLIN_OD)

    fibres = _smooth_noise(
        rng, (height, width), rng.uniform(6.0, 14.0), rng.uniform(1.0, 2.5), rng.uniform(0, np.pi)
    )
    blotches = _smooth_noise(rng, (height, width), rng.uniform(10.0, 25.0))
    background_texture = np.clip(1.0 + 0.2 * fibres + 0.2 * blotches, 0.0, None)
    eosin = rng.uniform(0.0, 0.2) * background_texture
    hematoxylin = rng.uniform(0.03, 0.25) * background_texture

    stain = rng.uniform(0.7, 1.6) * rng.uniform(0.75, 1.2, size=num_instances)
    chromatin = _smooth_noise(rng, (height, width), sigma=rng.uniform(0.7, 1.8))
    nucleus = _per_nucleus(stain, labels) * (0.85 + 0.3 * radial_position**4)
    nucleus *= np.clip(1.0 + rng.uniform(0.1, 0.3) * chromatin, 0.2, None)

    optical_density = (
        eosin[:, :, None] * eosin_od
        + hematoxylin[:, :, None] * hematoxylin_od
        + nucleus[:, :, None] * nucleus_od
    )
    illumination = rng.uniform(0.88, 1.0) * _illumination_gradient(
        rng, height, width, rng.uniform(0.0, 0.25)
    )
    return (illumination[:, :, None] * np.exp(-optical_density)).astype(np.float32)


def _degrade(rng, image):
    """Blur, shot (Poisson) noise and read (Gaussian) noise; float (H, W, 3) -> uint8."""
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.4), borderType=cv2.BORDER_REFLECT)
    photons_at_white = float(np.exp(rng.uniform(np.log(40.0), np.log(600.0))))
    image = rng.poisson(np.clip(image, 0.0, None) * photons_at_white) / photons_at_white
    image = image + rng.normal(0.0, rng.uniform(0.003, 0.02), size=image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def generate_synthetic_nuclei_image(seed, *, image_size=256, num_nuclei=None, look=None):
    """
    Draw one synthetic nuclei image and its instance masks, deterministically from ``seed``.

    Args:
        seed (int): non-negative; the same seed gives the same image and masks.
        image_size (int or tuple[int, int]): side of a square image, or (height, width).
        num_nuclei (int or None): how many nuclei to draw (before occlusion may remove some);
            None draws the count from the seed (1-4 in some images, 5-60 in most, fewer when
            the nuclei are large). 0 gives an image with no nucleus.
        look (str or None): "fluorescence" or "brightfield"; None draws it from the seed.
            The layout does not depend on ``look``.

    Returns:
        image (H, W, 3) uint8, RGB.
        masks (N, H, W) bool: visible part of each nucleus; disjoint, each one 4-connected with
            at least MIN_INSTANCE_AREA pixels, in drawing order (N may be 0).
    """
    if isinstance(image_size, (int, np.integer)):
        height = width = int(image_size)
    else:
        height, width = (int(side) for side in image_size)
    if height < 16 or width < 16:
        raise ValueError(f"image_size={image_size!r}: each side must be at least 16 pixels")
    if num_nuclei is not None and num_nuclei < 0:
        raise ValueError(f"num_nuclei={num_nuclei!r} must be >= 0 or None")
    if look is not None and look not in LOOKS:
        raise ValueError(f"look={look!r} must be one of {LOOKS} or None")
    if int(seed) < 0:
        raise ValueError(f"seed={seed!r} must be >= 0")

    layout_rng, look_rng, render_rng, noise_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(int(seed)).spawn(4)
    )
    nuclei = _draw_nuclei(layout_rng, height, width, num_nuclei)
    labels, radial_position = _rasterize(nuclei, height, width)
    labels, num_instances = _clean_labels(labels, len(nuclei))

    drawn_look = LOOKS[int(look_rng.random() < 0.35)]  # fluorescence dominates, as in DSB2018
    render = _render_brightfield if (look or drawn_look) == "brightfield" else _render_fluorescence
    image = _degrade(noise_rng, render(render_rng, labels, radial_position, num_instances))
    masks = labels[None, :, :] == np.arange(1, num_instances + 1)[:, None, None]
    return image, masks


def _encode_annotation(mask, annotation_id, image_id):
    """COCO annotation (compressed RLE with str counts, exact area, tight XYWH box) of a
    (H, W) bool mask."""
    rle, area, bbox = mask_to_annotation_fields(mask)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": rle,
        "area": area,
        "bbox": bbox,
        "iscrowd": 0,
    }


def _dataset_paths(dataset_dir):
    """Paths inside a written dataset folder (see write_synthetic_nuclei_dataset)."""
    return {
        "image_root": str(dataset_dir / "images"),
        "sem_seg_root": str(dataset_dir / "sem_seg"),
        "json_file": str(dataset_dir / "instances.json"),
    }


def write_synthetic_nuclei_dataset(out_dir, *, num_images, seed_base, image_size=256):
    """
    Write a synthetic nuclei dataset into ``out_dir`` (created if missing; existing files of
    the same names are overwritten). Image ``k`` uses seed ``seed_base + k``, and has no
    nucleus when ``k % EMPTY_IMAGE_PERIOD == 0``.

    Layout:
        images/{k:04d}.png     RGB image, (H, W, 3) uint8
        sem_seg/{k:04d}.png    semantic mask, (H, W) uint8, 0 background / 1 nucleus
        instances.json         COCO instances: category "nucleus" id 1, compressed RLE masks
                               (counts as str), exact area, tight XYWH boxes; image ids k + 1

    Returns:
        dict with "image_root", "sem_seg_root" and "json_file" (str paths).
    """
    if num_images < 0:
        raise ValueError(f"num_images={num_images!r} must be >= 0")
    paths = _dataset_paths(Path(out_dir))
    os.makedirs(paths["image_root"], exist_ok=True)
    os.makedirs(paths["sem_seg_root"], exist_ok=True)

    images, annotations = [], []
    for k in range(num_images):
        seed = seed_base + k
        image, masks = generate_synthetic_nuclei_image(
            seed, image_size=image_size, num_nuclei=0 if k % EMPTY_IMAGE_PERIOD == 0 else None
        )
        file_name = f"{k:04d}.png"
        cv2.imwrite(os.path.join(paths["image_root"], file_name), image[:, :, ::-1])
        semantic = masks.any(axis=0).astype(np.uint8)
        cv2.imwrite(os.path.join(paths["sem_seg_root"], file_name), semantic)
        image_id = k + 1
        height, width = image.shape[:2]
        images.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width, "seed": seed}
        )
        for mask in masks:
            annotations.append(_encode_annotation(mask, len(annotations) + 1, image_id))

    coco = {
        "info": {
            "description": "maskrcnnpp synthetic nuclei",
            "num_images": num_images,
            "seed_base": seed_base,
            "image_size": image_size,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus", "supercategory": "cell"}],
    }
    with open(paths["json_file"], "w") as f:
        json.dump(coco, f)
    return paths


def _cache_root():
    """Cache root, read at call time: $MASKRCNNPP_CACHE, else ~/.cache/maskrcnnpp."""
    return Path(os.environ.get("MASKRCNNPP_CACHE") or Path.home() / ".cache" / "maskrcnnpp")


def _dataset_dir_name(split, params):
    """Folder name for one split: the parameters and the generator (this file's source, numpy
    and OpenCV versions) hashed, so any change of generator writes a fresh folder."""
    fingerprint = hashlib.sha256()
    fingerprint.update(json.dumps(params, sort_keys=True).encode())
    fingerprint.update(f"numpy={np.__version__} cv2={cv2.__version__}".encode())
    fingerprint.update(Path(__file__).read_bytes())
    return f"nuclei_synth_{split}-{fingerprint.hexdigest()[:16]}"


def _generate_once(dataset_dir, **params):
    """
    Write the dataset to ``dataset_dir`` unless it exists. Safe under concurrent processes:
    each writes into its own temporary folder beside the target and renames it into place;
    a process that finds the target already there discards its copy and uses the target.

    Returns:
        dict of paths, as write_synthetic_nuclei_dataset.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        dataset_dir.parent.mkdir(parents=True, exist_ok=True)
        temp_dir = tempfile.mkdtemp(prefix=f".{dataset_dir.name}.tmp-", dir=dataset_dir.parent)
        try:
            write_synthetic_nuclei_dataset(temp_dir, **params)
            os.rename(temp_dir, dataset_dir)
        except OSError:
            if not dataset_dir.is_dir():  # a real failure, not a lost race
                raise
        finally:
            if os.path.isdir(temp_dir):
                shutil.rmtree(temp_dir, ignore_errors=True)
    return _dataset_paths(dataset_dir)


def ensure_synthetic_nuclei(split):
    """
    Generate the registered synthetic split in the cache if it is not there yet.

    Args:
        split (str): a key of SYNTHETIC_NUCLEI_SPLITS ("train" or "val").

    Returns:
        dict with "image_root", "sem_seg_root" and "json_file" (str paths).
    """
    if split not in SYNTHETIC_NUCLEI_SPLITS:
        raise ValueError(
            f"Unknown synthetic nuclei split {split!r}; known: {sorted(SYNTHETIC_NUCLEI_SPLITS)}"
        )
    params = SYNTHETIC_NUCLEI_SPLITS[split]
    dataset_dir = _cache_root() / "synthetic_nuclei" / _dataset_dir_name(split, params)
    return _generate_once(dataset_dir, **params)


class _SyntheticNucleiMetadata(Metadata):
    """
    Metadata whose paths (``json_file``, ``image_root``, ``sem_seg_root``) are resolved when
    read: the cache root is looked up then, and the split is generated if missing, so
    evaluators that open ``json_file`` always find it.
    """

    @property
    def json_file(self):
        return ensure_synthetic_nuclei(self.synthetic_split)["json_file"]

    @property
    def image_root(self):
        return ensure_synthetic_nuclei(self.synthetic_split)["image_root"]

    @property
    def sem_seg_root(self):
        return ensure_synthetic_nuclei(self.synthetic_split)["sem_seg_root"]


def _load_instances(split, dataset_name):
    """Detectron2 instance dicts of a split (bbox_mode XYWH_ABS, RLE masks, category_id 0)."""
    paths = ensure_synthetic_nuclei(split)
    return load_coco_json(paths["json_file"], paths["image_root"], dataset_name)


def _load_sem_seg(split):
    """Detectron2 semantic dicts of a split: file_name, sem_seg_file_name, height, width,
    image_id."""
    paths = ensure_synthetic_nuclei(split)
    with open(paths["json_file"]) as f:
        images = json.load(f)["images"]
    return [
        {
            "file_name": os.path.join(paths["image_root"], image["file_name"]),
            "sem_seg_file_name": os.path.join(paths["sem_seg_root"], image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
        }
        for image in images
    ]


def register_synthetic_nuclei():
    """
    Register ``nuclei_synth_{split}`` (instances) and ``nuclei_synth_sem_seg_{split}``
    (semantic) for every split of SYNTHETIC_NUCLEI_SPLITS. Called once, on import.
    Nothing is generated until a dataset or a metadata path is first read.
    """
    for split in SYNTHETIC_NUCLEI_SPLITS:
        instances_name = f"nuclei_synth_{split}"
        DatasetCatalog.register(
            instances_name, lambda split=split, name=instances_name: _load_instances(split, name)
        )
        MetadataCatalog[instances_name] = _SyntheticNucleiMetadata(
            name=instances_name,
            synthetic_split=split,
            thing_classes=["nucleus"],
            thing_dataset_id_to_contiguous_id={1: 0},
            evaluator_type="coco",
        )

        sem_seg_name = f"nuclei_synth_sem_seg_{split}"
        DatasetCatalog.register(sem_seg_name, lambda split=split: _load_sem_seg(split))
        MetadataCatalog[sem_seg_name] = _SyntheticNucleiMetadata(
            name=sem_seg_name,
            synthetic_split=split,
            stuff_classes=["background", "nucleus"],
            ignore_label=255,
            evaluator_type="sem_seg",
            # the nuclei metrics read instance ground truth from the instance twin
            instance_dataset_name=instances_name,
        )


register_synthetic_nuclei()


def write_example_label_folder(
    out: str, *, num_images: int = 12, size: int = 128, seed: int = 0
) -> None:
    """Write synthetic nuclei as a folder to try the conversion on (the StarDist layout):
    ``out/images/nuclei_<k>.png`` (8-bit RGB) and ``out/masks/nuclei_<k>.tif`` (uint16 label
    image, 0 background, 1..N the nuclei), image k drawn from seed ``seed + k``."""
    for folder in ("images", "masks"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    for k in range(num_images):
        image, masks = generate_synthetic_nuclei_image(seed + k, image_size=size)
        # the masks are disjoint: nucleus i gets id i + 1
        ids = np.arange(1, len(masks) + 1, dtype=np.uint16)[:, None, None]
        labels = (masks * ids).sum(axis=0, dtype=np.uint16)
        cv2.imwrite(os.path.join(out, "images", f"nuclei_{k}.png"), image[:, :, ::-1])
        tifffile.imwrite(os.path.join(out, "masks", f"nuclei_{k}.tif"), labels)
