"""
Dataset mapper of instance models (Mask R-CNN, Mask R-CNN++): Detectron2's ``DatasetMapper``
with images read by :func:`maskrcnnpp.data.image_io.read_image_rgb`, so that training reads
the same files (TIFF, 16-bit, RGBA, grayscale) as the rest of the project, and an unreadable
training image is reported and skipped instead of stopping the run; images are resized by
the project's pixel-scale factors (:mod:`maskrcnnpp.data.pixel_scale`), not to a shortest edge.
"""

import copy
import logging
from typing import Dict, Optional

import numpy as np
import torch
from detectron2.data import DatasetMapper, detection_utils as utils, transforms as T
from PIL import Image

from .image_io import ImageReadError, read_image_rgb
from .pixel_scale import build_instance_augmentations

__all__ = ["InstanceDatasetMapper"]

logger = logging.getLogger(__name__)


class InstanceDatasetMapper(DatasetMapper):
    """
    Detectron2's :class:`DatasetMapper` (same config and outputs: ``"image"`` (C, H, W) uint8
    in ``INPUT.FORMAT``, and in training ``"instances"``), with two changes: the image is read
    by :func:`read_image_rgb`, and the augmentations are
    :func:`~maskrcnnpp.data.pixel_scale.build_instance_augmentations` (resize by
    ``INPUT.SCALE_FACTOR_TEST``, or in training by a factor drawn from
    ``INPUT.SCALE_FACTOR_TRAIN`` followed by the crop and flip) instead of Detectron2's crop,
    ``ResizeShortestEdge`` and flip.

    Training: an image that is missing, empty (0 bytes), truncated, undecodable or has no
    pixels is logged once per file with the file and the reason, and the mapper returns
    ``None``, so Detectron2's ``MapDataset`` draws another image. An image without annotations
    is a negative example like any other (keep it with ``DATALOADER.FILTER_EMPTY_ANNOTATIONS:
    False``). Test: an unreadable image raises :class:`ImageReadError` naming the file, since
    skipping it would silently change what is evaluated.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reported = set()  # unreadable files already logged by this mapper

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_instance_augmentations(cfg, is_train)
        return ret

    def _read_image(self, file_name: str) -> np.ndarray:
        """(H, W, C) uint8 in ``self.image_format`` (Detectron2's conversion from RGB)."""
        rgb = read_image_rgb(file_name)
        if self.image_format == "RGB":
            return rgb
        if self.image_format == "BGR":
            return np.ascontiguousarray(rgb[:, :, ::-1])
        return utils.convert_PIL_to_numpy(Image.fromarray(rgb), self.image_format)

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        """
        Args:
            dataset_dict: one image in Detectron2's dataset format.

        Returns:
            the model's input dict, or ``None`` for an unreadable training image.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            image = self._read_image(file_name)
        except ImageReadError as e:
            if not self.is_train:
                raise
            if file_name not in self._reported:
                self._reported.add(file_name)
                logger.warning(f"Skipping a training image: {e}")
            return None
        utils.check_image_size(dataset_dict, image)

        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk
            )
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
