"""The dataset mapper each kind of model trains and is tested with."""

from .instance_mapper import InstanceDatasetMapper
from .semantic_patch_mapper import SemanticPatchDatasetMapper

__all__ = ["SEMANTIC_META_ARCHITECTURES", "build_nuclei_mapper"]

# Meta-architectures that take {"image", "sem_seg"} inputs from SemanticPatchDatasetMapper.
SEMANTIC_META_ARCHITECTURES = ("SemanticUNetPlusPlus",)


def build_nuclei_mapper(cfg, is_train: bool):
    """
    Returns:
        callable: :class:`SemanticPatchDatasetMapper` for the semantic meta-architectures,
        :class:`InstanceDatasetMapper` (Detectron2's ``DatasetMapper`` reading images with
        ``read_image_rgb`` and skipping unreadable training images) for instance models.
    """
    if cfg.MODEL.META_ARCHITECTURE in SEMANTIC_META_ARCHITECTURES:
        return SemanticPatchDatasetMapper(cfg, is_train=is_train)
    return InstanceDatasetMapper(cfg, is_train=is_train)
