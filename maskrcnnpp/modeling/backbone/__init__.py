"""Backbones: the nested-dense FPN (Mask R-CNN++) and the VGG-style encoder of UNet++."""

from .nested_fpn import NestedFPN, build_nested_fpn_backbone, build_resnet_nested_fpn_backbone
from .vgg import VGG, build_vgg_backbone

__all__ = [
    "NestedFPN",
    "build_nested_fpn_backbone",
    "build_resnet_nested_fpn_backbone",
    "VGG",
    "build_vgg_backbone",
]
