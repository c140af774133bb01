"""
The pixel scale instance models (Mask R-CNN, Mask R-CNN++) see: one rule for training,
evaluation, prediction and export.

For microscopy the size of a nucleus in pixels is what the model learns, not the image's
shortest edge. So every image is resized by a *factor*, never to a *size*:

* test time (evaluation mapper, every image and every tile of ``tools/predict.py``, export's
  sample inputs): the fixed factor ``INPUT.SCALE_FACTOR_TEST``; a 256 image, a 512 tile and
  an untiled 1000 x 1000 image all have their nuclei enlarged alike, and a k x k mosaic of an
  image gives k² times its nuclei;
* training: a factor drawn log-uniformly from ``INPUT.SCALE_FACTOR_TRAIN`` (min, max) per
  image (the jitter around the test factor), then the config's crop (``INPUT.CROP``) and flip.

Detectron2's ``INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN / MIN_SIZE_TEST / MAX_SIZE_TEST``
(``ResizeShortestEdge``, which scales each image by its own factor) are not read for instance
models. Semantic models (:func:`~maskrcnnpp.modeling.model_kind.is_semantic_model`) see
images at their own pixel scale: both factors must stay 1 for them.
"""

import math
from typing import List, Optional, Tuple

import numpy as np
from detectron2.data import transforms as T

from ..modeling.model_kind import is_semantic_model

__all__ = [
    "ScaleByFactor",
    "build_instance_augmentations",
    "pixel_scale_problem",
    "scale_factor_at_test",
    "scale_factor_range_in_training",
    "scaled_size",
]


def _positive_finite(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def pixel_scale_problem(cfg) -> Optional[Tuple[str, object, str]]:
    """
    Returns:
        None when ``INPUT.SCALE_FACTOR_TEST`` and ``INPUT.SCALE_FACTOR_TRAIN`` are valid for
        the config's model, else ``(key, value, what the value must be)`` of the first bad one.
    """
    test = cfg.INPUT.SCALE_FACTOR_TEST
    train = cfg.INPUT.SCALE_FACTOR_TRAIN
    if not _positive_finite(test):
        return "INPUT.SCALE_FACTOR_TEST", test, "a finite number > 0"
    if not (
        isinstance(train, (list, tuple))
        and len(train) == 2
        and all(_positive_finite(v) for v in train)
        and train[0] <= train[1]
    ):
        return "INPUT.SCALE_FACTOR_TRAIN", train, "(min, max), two finite numbers 0 < min <= max"
    if is_semantic_model(cfg):
        semantic = f"1 for semantic models ({cfg.MODEL.META_ARCHITECTURE} sees images at their own pixel scale)"
        if test != 1:
            return "INPUT.SCALE_FACTOR_TEST", test, semantic
        if tuple(train) != (1, 1):
            return "INPUT.SCALE_FACTOR_TRAIN", train, f"(1, 1): {semantic}"
    return None


def _check(cfg) -> None:
    problem = pixel_scale_problem(cfg)
    if problem:
        key, value, expected = problem
        raise ValueError(f"{key} = {value!r} must be {expected}")


def scale_factor_at_test(cfg) -> float:
    """The one factor every test-time image and tile is resized by (1 for semantic models).

    Raises:
        ValueError: naming the key and value of a bad ``INPUT.SCALE_FACTOR_*``.
    """
    _check(cfg)
    return float(cfg.INPUT.SCALE_FACTOR_TEST)


def scale_factor_range_in_training(cfg) -> Tuple[float, float]:
    """(min, max) of the per-image training factor (``INPUT.SCALE_FACTOR_TRAIN``)."""
    _check(cfg)
    low, high = cfg.INPUT.SCALE_FACTOR_TRAIN
    return float(low), float(high)


def scaled_size(height: int, width: int, factor: float) -> Tuple[int, int]:
    """(height, width) of an image resized by ``factor``: rounded, at least 1 pixel."""
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


class ScaleByFactor(T.Augmentation):
    """
    Resize the image by a factor, not to a size: fixed (``min_factor == max_factor``) or drawn
    log-uniformly from ``[min_factor, max_factor]`` for each image (so that halving and
    doubling are equally likely around the geometric mean). Returns Detectron2's
    ``ResizeTransform`` (bilinear image, nearest masks; boxes and polygons scaled), or a
    ``NoOpTransform`` when the size does not change.
    """

    def __init__(self, min_factor: float, max_factor: Optional[float] = None, interp=None):
        """
        Args:
            min_factor, max_factor: the factor range; ``max_factor`` None: one fixed factor.
            interp: PIL interpolation of the image (default bilinear, as ResizeShortestEdge).
        """
        super().__init__()
        max_factor = min_factor if max_factor is None else max_factor
        if not (
            _positive_finite(min_factor)
            and _positive_finite(max_factor)
            and min_factor <= max_factor
        ):
            raise ValueError(
                f"scale factors must be finite, 0 < min <= max; got ({min_factor}, {max_factor})"
            )
        self.min_factor = float(min_factor)
        self.max_factor = float(max_factor)
        self.interp = interp

    def draw_factor(self) -> float:
        if self.min_factor == self.max_factor:
            return self.min_factor
        return float(np.exp(np.random.uniform(np.log(self.min_factor), np.log(self.max_factor))))

    def get_transform(self, image):
        height, width = image.shape[:2]
        new_height, new_width = scaled_size(height, width, self.draw_factor())
        if (new_height, new_width) == (height, width):
            return T.NoOpTransform()
        return T.ResizeTransform(height, width, new_height, new_width, self.interp)


def build_instance_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """
    The augmentations of instance models, shared by the dataset mapper (training and
    evaluation), ``NucleiPredictor`` and export's sample inputs.

    Returns:
        Test: ``[ScaleByFactor(INPUT.SCALE_FACTOR_TEST)]`` ([] when it is 1). Training:
        ``ScaleByFactor(*INPUT.SCALE_FACTOR_TRAIN)`` (left out when it is (1, 1)), then
        ``RandomCrop(INPUT.CROP.TYPE, INPUT.CROP.SIZE)`` when ``INPUT.CROP.ENABLED``, then
        ``RandomFlip`` as ``INPUT.RANDOM_FLIP`` says.
    """
    if not is_train:
        factor = scale_factor_at_test(cfg)
        return [] if factor == 1 else [ScaleByFactor(factor)]
    low, high = scale_factor_range_in_training(cfg)
    augmentations = [] if low == high == 1 else [ScaleByFactor(low, high)]
    if cfg.INPUT.CROP.ENABLED:
        augmentations.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augmentations.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augmentations
