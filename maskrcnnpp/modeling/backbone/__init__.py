"""Backbones: the nested-dense FPN (Mask R-CNN++) and the encoders of UNet++ (VGG-style, ResNet)."""

from .nested_fpn import NestedFPN, build_nested_fpn_backbone, build_resnet_nested_fpn_backbone
from .resnet_encoder import ResNetEncoder, build_resnet_encoder_backbone
from .vgg import VGG, build_vgg_backbone

__all__ = [
    "NestedFPN",
    "build_nested_fpn_backbone",
    "build_resnet_nested_fpn_backbone",
    "ResNetEncoder",
    "build_resnet_encoder_backbone",
    "VGG",
    "build_vgg_backbone",
]
