"""Models: the nested-dense FPN backbone (Mask R-CNN++), the UNet++ encoders and the semantic
UNet++ meta-architecture."""

from . import (
    backbone,  # noqa: F401  registers the nested FPN, VGG and ResNet-encoder backbones
    meta_arch,  # noqa: F401  registers SemanticUNetPlusPlus
)
