"""The model kind comes from the registered meta-architecture class, so a user's own semantic
meta-architecture gets the semantic data path and pixel-scale rule."""

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from maskrcnnpp.config import add_maskrcnnpp_config
from maskrcnnpp.data.build import build_nuclei_mapper
from maskrcnnpp.data.pixel_scale import pixel_scale_problem
from maskrcnnpp.data.semantic_patch_mapper import SemanticPatchDatasetMapper
from maskrcnnpp.modeling.model_kind import INSTANCE, SEMANTIC, is_semantic_model, model_kind


@META_ARCH_REGISTRY.register()
class UsersOwnSemanticModel(nn.Module):
    model_kind = "semantic"


@META_ARCH_REGISTRY.register()
class ModelOfAnUnknownKind(nn.Module):
    model_kind = "panoptic"


def _cfg(meta_architecture):
    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = meta_architecture
    return cfg


def test_kind_is_read_from_the_registered_class():
    assert model_kind(_cfg("SemanticUNetPlusPlus")) == SEMANTIC
    assert model_kind(_cfg("UsersOwnSemanticModel")) == SEMANTIC
    assert model_kind(_cfg("GeneralizedRCNN")) == INSTANCE  # Detectron2's, no attribute
    assert not is_semantic_model(_cfg("GeneralizedRCNN"))


def test_users_semantic_model_gets_the_semantic_mapper_and_pixel_scale_rule():
    cfg = _cfg("UsersOwnSemanticModel")
    assert isinstance(build_nuclei_mapper(cfg, is_train=False), SemanticPatchDatasetMapper)
    cfg.INPUT.SCALE_FACTOR_TEST = 2.0
    key, value, expected = pixel_scale_problem(cfg)
    assert key == "INPUT.SCALE_FACTOR_TEST" and value == 2.0
    assert "semantic" in expected and "UsersOwnSemanticModel" in expected


def test_a_kind_that_is_neither_is_named():
    with pytest.raises(ValueError, match="ModelOfAnUnknownKind.model_kind.*'panoptic'"):
        model_kind(_cfg("ModelOfAnUnknownKind"))
