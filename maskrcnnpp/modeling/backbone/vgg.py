"""
The VGG-style encoder of the UNet++ paper, as a Detectron2 backbone: the bottom-up network of
a nested FPN or the encoder of a semantic UNet++.
"""

from collections import OrderedDict

import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from torch import nn

from ..conv_blocks import conv3x3_norm_relu
from .staged_encoder import StagedEncoder

__all__ = ["VGG", "build_vgg_backbone"]


class VGG(StagedEncoder):
    """
    Stage k (k = 0, 1, ...) is a 2x2 max-pool (except stage 0) followed by two
    3x3 conv + norm + ReLU with ``stage_channels[k]`` output channels. Its output is named
    ``"vgg{k}"`` and has stride 2**k, so "vgg2".."vgg5" sit at strides 4..32 like ResNet's
    "res2".."res5". Stages deeper than the deepest requested output are not built.

    Module names: stage k is ``self.vgg{k}``, its convs ``conv1`` and ``conv2``.
    """

    @configurable
    def __init__(self, *, in_channels, stage_channels, norm="BN", out_features):
        """
        Args:
            in_channels (int): channels of the input image.
            stage_channels (list[int]): output channels of stages 0, 1, ...
            norm (str): normalization after each conv, a :func:`get_norm` name ("" for none).
            out_features (list[str]): stage outputs to return, among "vgg0", "vgg1", ...
        """
        super().__init__()
        available = [f"vgg{k}" for k in range(len(stage_channels))]
        unknown = [name for name in out_features if name not in available]
        if not out_features or unknown:
            raise ValueError(
                f"MODEL.VGG.OUT_FEATURES {list(out_features)}: must be a non-empty subset of "
                f"{available} (one per entry of MODEL.VGG.STAGE_CHANNELS {list(stage_channels)})."
            )
        num_stages = 1 + max(available.index(name) for name in out_features)
        self._stage_names = available[:num_stages]
        self._out_features = [name for name in available if name in out_features]
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        stage_in_channels = in_channels
        for k, (name, channels) in enumerate(zip(self._stage_names, stage_channels)):
            convs = OrderedDict(
                conv1=conv3x3_norm_relu(stage_in_channels, channels, norm),
                conv2=conv3x3_norm_relu(channels, channels, norm),
            )
            self.add_module(name, nn.Sequential(convs))
            self._out_feature_strides[name] = 2**k
            self._out_feature_channels[name] = channels
            stage_in_channels = channels

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {
            "in_channels": input_shape.channels,
            "stage_channels": list(cfg.MODEL.VGG.STAGE_CHANNELS),
            "norm": cfg.MODEL.VGG.NORM,
            "out_features": list(cfg.MODEL.VGG.OUT_FEATURES),
        }

    def stages(self):
        """Stage k: a 2x2 max-pool (except stage 0), then ``self.vgg{k}``. :meth:`forward`
        returns "vgg{k}" -> (N, stage_channels[k], H / 2**k, W / 2**k) (sizes rounded down)
        for every requested output."""

        def pooled(convs):
            return lambda x: convs(F.max_pool2d(x, kernel_size=2, stride=2))

        return [
            (name, getattr(self, name) if k == 0 else pooled(getattr(self, name)))
            for k, name in enumerate(self._stage_names)
        ]


@BACKBONE_REGISTRY.register()
def build_vgg_backbone(cfg, input_shape: ShapeSpec):
    """
    A :class:`VGG` encoder configured by MODEL.VGG.*.

    Returns:
        VGG
    """
    return VGG(cfg, input_shape)
