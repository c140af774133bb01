"""The dataset mapper each kind of model trains and is tested with."""

from detectron2.data import DatasetMapper

from .semantic_patch_mapper import SemanticPatchDatasetMapper

__all__ = ["SEMANTIC_META_ARCHITECTURES", "build_nuclei_mapper"]

# Meta-architectures that take {"image", "sem_seg"} inputs from SemanticPatchDatasetMapper.
SEMANTIC_META_ARCHITECTURES = ("SemanticUNetPlusPlus",)


def build_nuclei_mapper(cfg, is_train: bool):
    """
    Returns:
        callable: :class:`SemanticPatchDatasetMapper` for the semantic meta-architectures,
        Detectron2's :class:`DatasetMapper` for instance models.
    """
    if cfg.MODEL.META_ARCHITECTURE in SEMANTIC_META_ARCHITECTURES:
        return SemanticPatchDatasetMapper(cfg, is_train=is_train)
    return DatasetMapper(cfg, is_train=is_train)
