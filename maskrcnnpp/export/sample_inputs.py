"""Sample images for tracing a model and for checking the exported model against it: the
user's files, else the config's test dataset, else synthetic nuclei."""

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, transforms as T

from ..data.image_io import read_image_rgb
from ..data.pixel_scale import build_instance_augmentations, scale_factor_at_test
from ..data.synthetic_nuclei import generate_synthetic_nuclei_image
from ..inference.input_files import collect_image_files
from ..modeling.model_kind import is_semantic_model

__all__ = [
    "SampleInput",
    "image_to_model_input",
    "load_sample_inputs",
    "resizes_at_test",
]

logger = logging.getLogger(__name__)


@dataclass
class SampleInput:
    """One preprocessed image, as the project's test-time mapper feeds the model.

    Attributes:
        image: (C, H, W) float32 tensor on the model's device, pixel values 0..255 in the
            channel order of ``cfg.INPUT.FORMAT``; for instance models resized as in
            evaluation and prediction, by the factor ``INPUT.SCALE_FACTOR_TEST``
            (:func:`~maskrcnnpp.data.pixel_scale.build_instance_augmentations`), for
            semantic models (``is_semantic_model``) at the original size.
        height, width: size of the original image, before the resize.
        source: where it came from (a file, ``<dataset>:<file>`` or ``synthetic:<seed>``).
        rgb: the original (H, W, 3) uint8 RGB image (bioimage.io packages take it as it is).
    """

    image: torch.Tensor
    height: int
    width: int
    source: str
    rgb: Optional[np.ndarray] = None


def resizes_at_test(cfg) -> bool:
    """Whether the model's test-time mapper resizes images (instance models with
    ``INPUT.SCALE_FACTOR_TEST`` != 1) or feeds them as they are (semantic models, which
    predict large images window by window, and a factor of 1)."""
    if is_semantic_model(cfg):
        return False
    return scale_factor_at_test(cfg) != 1


def image_to_model_input(rgb: np.ndarray, cfg, device, source: str) -> SampleInput:
    """
    Args:
        rgb: (H, W, 3) uint8 RGB image.
        cfg: the model's config (``INPUT.FORMAT``, ``INPUT.SCALE_FACTOR_TEST``).
        device: where the tensor goes.
    """
    if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise ValueError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r}: export supports 'BGR' and 'RGB' inputs."
        )
    height, width = rgb.shape[:2]
    image = rgb
    if resizes_at_test(cfg):
        aug_input = T.AugInput(np.ascontiguousarray(rgb))
        T.AugmentationList(build_instance_augmentations(cfg, is_train=False))(aug_input)
        image = aug_input.image
    if cfg.INPUT.FORMAT == "BGR":
        image = image[:, :, ::-1]
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32)
    return SampleInput(image=tensor.to(device), height=height, width=width, source=source, rgb=rgb)


def _test_dataset_images(cfg, count: int) -> List[str]:
    """Up to ``count`` image files of ``cfg.DATASETS.TEST[0]``; [] when there is none or it
    cannot be loaded (not registered, not prepared)."""
    if not cfg.DATASETS.TEST:
        return []
    name = cfg.DATASETS.TEST[0]
    try:
        records = DatasetCatalog.get(name)
    except (KeyError, FileNotFoundError, OSError) as e:
        logger.warning("DATASETS.TEST %s cannot be loaded (%s): using synthetic images.", name, e)
        return []
    return [record["file_name"] for record in records[:count]]


def load_sample_inputs(
    cfg, image_paths: Sequence[str] = (), *, count: int = 2, synthetic_size: int = 256
) -> List[SampleInput]:
    """
    Args:
        cfg: the model's config; ``cfg.MODEL.DEVICE`` is where the images go.
        image_paths: files, folders or globs, taken as ``tools/predict.py`` takes its
            inputs; all their images are used. Empty: the first ``count`` images of
            ``cfg.DATASETS.TEST[0]``, or, when that dataset cannot be loaded, ``count``
            synthetic nuclei images of ``synthetic_size`` pixels.

    Returns:
        list[SampleInput], at least one.

    Raises:
        FileNotFoundError: naming the first path that holds or matches no image file.
    """
    device = torch.device(cfg.MODEL.DEVICE)
    if image_paths:
        files, problems = collect_image_files(image_paths)
        if problems:
            path, reason = problems[0]
            raise FileNotFoundError(f"--sample-image {path}: {reason}")
        return [image_to_model_input(read_image_rgb(f), cfg, device, f) for f in files]
    files = _test_dataset_images(cfg, count)
    if files:
        name = cfg.DATASETS.TEST[0]
        return [image_to_model_input(read_image_rgb(f), cfg, device, f"{name}:{f}") for f in files]
    return [
        image_to_model_input(
            generate_synthetic_nuclei_image(seed, image_size=synthetic_size)[0],
            cfg,
            device,
            f"synthetic:{seed}",
        )
        for seed in range(count)
    ]
