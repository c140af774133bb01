"""
Dataset mapper of semantic models: random patches with flips, 90-degree rotations and
intensity jitter in training; whole images at test time.
"""

import copy
import logging
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..structures.interior_boundary import interior_boundary_target
from ..structures.label_image import coco_segmentations_to_label_image
from .image_io import ImageReadError, read_image_rgb, read_label_image

__all__ = ["SemanticPatchDatasetMapper", "random_patch", "instance_annotations_of"]

logger = logging.getLogger(__name__)


def random_patch(
    image: np.ndarray, labels: np.ndarray, size: int, ignore_value: int, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """
    A random ``size`` x ``size`` patch of ``image`` (H, W, C) and ``labels`` (H, W), chosen
    uniformly among the positions inside the image. A side shorter than ``size`` is padded at
    its end: image with 0, labels with ``ignore_value``.
    """
    height, width = labels.shape
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=ignore_value)
        height, width = labels.shape
    y = int(rng.integers(0, height - size + 1))
    x = int(rng.integers(0, width - size + 1))
    return image[y : y + size, x : x + size], labels[y : y + size, x : x + size]


class SemanticPatchDatasetMapper:
    """
    Maps a dataset dict with ``file_name`` and ``sem_seg_file_name`` to the inputs of a
    semantic model: ``"image"`` (3, H, W) uint8 in ``image_format`` order and, in training, ``"sem_seg"`` (H, W)
    int64.

    Training: a random ``patch_size`` patch (padded with the ignore value when the image is
    smaller), a random horizontal flip, vertical flip and rotation by a multiple of 90
    degrees (the 8 symmetries of the square), optionally the colour channels in a random order
    and the intensities inverted (255 - x) with probability ``invert_prob``, then brightness and
    contrast each scaled by a random factor in [1 - jitter, 1 + jitter]. An image or label
    file that cannot be read is logged with the file and the reason and the record is skipped
    (Detectron2's loader draws another). Test: the whole image; unreadable files raise :class:`ImageReadError`.

    With ``instance_annotations`` (the ``"interior_boundary"`` target), the labels of an
    image are background 0, nucleus interior 1 and nucleus boundary 2
    (:func:`interior_boundary_target` of its instance masks), with the sem_seg file's ignored
    pixels kept ignored.

    Training keeps decoded images and their labels in memory, up to ``cache_mb`` megabytes
    per data-loader worker (first come, first kept): a patch of a kept image costs a crop
    instead of decoding the whole image file (on DSB2018, 13 ms a patch drawn by area).
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        patch_size: int,
        intensity_jitter: float,
        ignore_value: int,
        image_format: str = "RGB",
        instance_annotations: Optional[Dict[str, list]] = None,
        cache_mb: float = 0.0,
        shuffle_channels: bool = False,
        invert_prob: float = 0.0,
    ):
        """
        Args:
            is_train (bool): training (patches, augmentation, labels) or test (whole images).
            patch_size (int): side of the square training patches.
            intensity_jitter (float): J in [0, 1): brightness and contrast factors are
                drawn from [1 - J, 1 + J].
            ignore_value (int): label of padded pixels.
            image_format (str): "RGB" or "BGR", the channel order the model takes.
            instance_annotations (dict or None): image ``file_name`` -> its COCO instance
                annotations (``"segmentation"``); given, training targets are interior /
                boundary classes instead of the sem_seg labels.
            cache_mb (float): decoded training images and labels kept in memory, in
                megabytes (10**6 bytes) per data-loader worker; 0: none.
            shuffle_channels (bool): training patches get their colour channels in a random
                order.
            invert_prob (float): probability that a training patch is inverted (255 - x):
                dark nuclei on a light background become bright nuclei on a dark one and back.
        """
        if patch_size < 1 or not 0.0 <= intensity_jitter < 1.0:
            raise ValueError(
                f"INPUT.SEMANTIC_PATCH: SIZE must be >= 1 and INTENSITY_JITTER in [0, 1), got "
                f"{patch_size} and {intensity_jitter}."
            )
        self.is_train = is_train
        self.patch_size = patch_size
        self.intensity_jitter = intensity_jitter
        self.ignore_value = ignore_value
        if not 0.0 <= invert_prob <= 1.0:
            raise ValueError(
                f"INPUT.SEMANTIC_PATCH.INVERT_PROB must be in [0, 1], got {invert_prob}."
            )
        if cache_mb < 0:
            raise ValueError(f"INPUT.SEMANTIC_PATCH.CACHE_MB must be >= 0, got {cache_mb}.")
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT {image_format!r}: semantic models take 'RGB' or 'BGR'.")
        self.image_format = image_format
        self.instance_annotations = instance_annotations
        self.shuffle_channels = shuffle_channels
        self.invert_prob = invert_prob
        self.cache_bytes = int(cache_mb * 1e6)
        self._decoded = {}  # file_name -> (image (H, W, 3) uint8, training labels (H, W))
        self._decoded_bytes = 0
        self._rng = None

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "patch_size": cfg.INPUT.SEMANTIC_PATCH.SIZE,
            "intensity_jitter": cfg.INPUT.SEMANTIC_PATCH.INTENSITY_JITTER,
            "ignore_value": cfg.MODEL.UNETPP.IGNORE_VALUE,
            "image_format": cfg.INPUT.FORMAT,
            "cache_mb": cfg.INPUT.SEMANTIC_PATCH.CACHE_MB,
            "shuffle_channels": cfg.INPUT.SEMANTIC_PATCH.SHUFFLE_CHANNELS,
            "invert_prob": cfg.INPUT.SEMANTIC_PATCH.INVERT_PROB,
            "instance_annotations": (
                instance_annotations_of(cfg.DATASETS.TRAIN)
                if is_train and cfg.MODEL.UNETPP.TARGET == "interior_boundary"
                else None
            ),
        }

    @property
    def rng(self) -> np.random.Generator:
        # Seeded from numpy's global state, which Detectron2 seeds per data-loader worker.
        if self._rng is None:
            self._rng = np.random.default_rng(np.random.randint(2**31))
        return self._rng

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        dataset_dict = copy.copy(dataset_dict)
        if not self.is_train:
            image = read_image_rgb(dataset_dict["file_name"])
            dataset_dict["image"] = self._to_tensor(image)
            return dataset_dict
        decoded = self._decoded.get(dataset_dict["file_name"])
        if decoded is None:
            decoded = self._decode_training_pair(dataset_dict)
            if decoded is None:
                return None
        image, labels = self._augment(*decoded)
        dataset_dict["image"] = self._to_tensor(image)
        # copies (np.array): the tensors never share memory with the kept images
        dataset_dict["sem_seg"] = torch.from_numpy(np.array(labels, dtype=np.int64))
        return dataset_dict

    def _decode_training_pair(self, dataset_dict: Dict) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The image and its training labels (kept while the cache has room), or None after
        logging why the record is skipped."""
        try:
            image = read_image_rgb(dataset_dict["file_name"])
            labels = read_label_image(dataset_dict["sem_seg_file_name"])
        except ImageReadError as e:
            logger.warning(f"Skipping a training image: {e}")
            return None
        if labels.shape != image.shape[:2]:
            logger.warning(
                f"Skipping a training image: {dataset_dict['file_name']} is "
                f"{image.shape[1]}x{image.shape[0]} but its labels "
                f"{dataset_dict['sem_seg_file_name']} are {labels.shape[1]}x{labels.shape[0]}."
            )
            return None
        if self.instance_annotations is not None:
            labels = self._interior_boundary_labels(dataset_dict["file_name"], labels)
        # a dtype that holds the ignore value of the padding too
        labels = labels.astype(
            np.promote_types(labels.dtype, np.min_scalar_type(self.ignore_value)), copy=False
        )
        size = image.nbytes + labels.nbytes
        if self._decoded_bytes + size <= self.cache_bytes:
            self._decoded[dataset_dict["file_name"]] = (image, labels)
            self._decoded_bytes += size
        return image, labels

    def _interior_boundary_labels(self, file_name: str, sem_seg: np.ndarray) -> np.ndarray:
        if file_name not in self.instance_annotations:
            raise KeyError(
                f"MODEL.UNETPP.TARGET 'interior_boundary': no instance annotations for "
                f"{file_name} in the instance twins of DATASETS.TRAIN."
            )
        height, width = sem_seg.shape
        instances = coco_segmentations_to_label_image(
            [a["segmentation"] for a in self.instance_annotations[file_name]], height, width
        )
        target = interior_boundary_target(instances)
        target[sem_seg == self.ignore_value] = self.ignore_value
        return target

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, H, W) uint8 in the model's channel order."""
        if self.image_format == "BGR":
            image = image[:, :, ::-1]
        return torch.from_numpy(np.array(image.transpose(2, 0, 1)))

    def _augment(self, image: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        image, labels = random_patch(image, labels, self.patch_size, self.ignore_value, rng)
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if rng.random() < 0.5:
            image, labels = image[::-1], labels[::-1]
        quarter_turns = int(rng.integers(0, 4))
        image, labels = np.rot90(image, quarter_turns), np.rot90(labels, quarter_turns)
        # colour draws only when asked for, so that the patches of the other settings stay the same
        if self.shuffle_channels:
            image = image[:, :, rng.permutation(image.shape[2])]
        if self.invert_prob > 0 and rng.random() < self.invert_prob:
            image = 255 - image
        if self.intensity_jitter > 0:
            brightness, contrast = rng.uniform(
                1 - self.intensity_jitter, 1 + self.intensity_jitter, 2
            )
            pixels = image.astype(np.float32) * brightness
            pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
            image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return image, labels


def instance_annotations_of(dataset_names) -> Dict[str, list]:
    """
    Args:
        dataset_names (list[str]): semantic datasets whose metadata names their instance twin
            (``instance_dataset_name``: same images, COCO instance annotations).

    Returns:
        dict: image ``file_name`` -> list of annotation dicts, over all the twins.

    Raises:
        ValueError: naming a dataset without an instance twin.
    """
    annotations = {}
    for name in dataset_names:
        twin = MetadataCatalog.get(name).get("instance_dataset_name", None)
        if twin is None:
            raise ValueError(
                f"MODEL.UNETPP.TARGET 'interior_boundary' needs instance masks, but dataset '{name}' "
                "names no instance twin (MetadataCatalog.get(name).instance_dataset_name)."
            )
        for record in DatasetCatalog.get(twin):
            annotations[record["file_name"]] = record.get("annotations", [])
    return annotations
