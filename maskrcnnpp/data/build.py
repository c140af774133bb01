"""The dataset mapper and the training loader each kind of model trains and is tested with."""

import logging

from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from ..modeling.model_kind import is_semantic_model
from .instance_mapper import InstanceDatasetMapper
from .samplers import PixelAreaTrainingSampler
from .semantic_patch_mapper import SemanticPatchDatasetMapper

__all__ = ["build_nuclei_mapper", "build_nuclei_train_loader"]

logger = logging.getLogger(__name__)


def build_nuclei_mapper(cfg, is_train: bool):
    """
    Returns:
        callable: :class:`SemanticPatchDatasetMapper` for semantic models
        (:func:`~maskrcnnpp.modeling.model_kind.is_semantic_model`),
        :class:`InstanceDatasetMapper` (Detectron2's ``DatasetMapper`` reading images with
        ``read_image_rgb`` and skipping unreadable training images) for instance models.
    """
    if is_semantic_model(cfg):
        return SemanticPatchDatasetMapper(cfg, is_train=is_train)
    return InstanceDatasetMapper(cfg, is_train=is_train)


def build_nuclei_train_loader(cfg):
    """
    Detectron2's ``build_detection_train_loader`` with the mapper of
    :func:`build_nuclei_mapper`, plus two things:

    - ``DATALOADER.SAMPLER_TRAIN "PixelAreaTrainingSampler"`` draws images with probability
      proportional to their pixel area to the power ``DATALOADER.PIXEL_AREA_POWER``
      (:class:`PixelAreaTrainingSampler`); Detectron2's
      own sampler names keep their meaning.
    - Semantic models never group batches by aspect ratio (their patches all have one size).
      Grouping would put only landscape or only portrait images in a batch; on nuclei data
      the aspect ratio follows the imaging type, so BatchNorm would learn per-type batch
      statistics that its running averages, used at test time, do not match.
      Instance models keep ``DATALOADER.ASPECT_RATIO_GROUPING``.
    """
    semantic = is_semantic_model(cfg)
    kwargs = {"mapper": build_nuclei_mapper(cfg, is_train=True)}
    if semantic:
        kwargs["aspect_ratio_grouping"] = False
    if cfg.DATALOADER.SAMPLER_TRAIN == "PixelAreaTrainingSampler":
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        kwargs["dataset"] = dataset
        kwargs["sampler"] = PixelAreaTrainingSampler.from_dataset_dicts(
            dataset,
            power=cfg.DATALOADER.PIXEL_AREA_POWER,
            seed=cfg.SEED if cfg.SEED >= 0 else None,
        )
        logger.info("Using training sampler PixelAreaTrainingSampler")
    return build_detection_train_loader(cfg, **kwargs)
