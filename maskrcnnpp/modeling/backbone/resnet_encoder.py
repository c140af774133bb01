"""
Detectron2's ResNet as a U-Net encoder: its maps at strides 4..32 ("res2".."res5") plus the
stem's conv output at stride 2 ("res1"), so that a decoder can come back to stride 2.
"""

import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, ResNet, build_resnet_backbone

from .staged_encoder import StagedEncoder

__all__ = ["ResNetEncoder", "build_resnet_encoder_backbone"]

_RESNET_STAGES = ("res2", "res3", "res4", "res5")


class ResNetEncoder(StagedEncoder):
    """
    Wraps a Detectron2 :class:`ResNet` with a :class:`BasicStem` (conv1 with stride 2 + ReLU,
    then a 3x3 max-pool with stride 2). Output "res1" is the stem's map before the max-pool
    (stride 2, ``stem.out_channels`` channels); "res2".."res5" are the ResNet's own. The
    wrapped network is ``self.resnet``, so its parameters keep ResNet's names after that
    prefix and Detectron2's checkpoint matching loads ImageNet ResNet weights into it.
    """

    def __init__(self, resnet: ResNet, out_features):
        """
        Args:
            resnet (ResNet): built with the requested "res2".."res5" outputs (or "stem" when
                none is requested).
            out_features (list[str]): outputs to return, among "res1".."res5".
        """
        super().__init__()
        available = ("res1",) + tuple(resnet.stage_names)
        unknown = [name for name in out_features if name not in available]
        if not out_features or unknown:
            raise ValueError(
                f"MODEL.RESNETS.OUT_FEATURES {list(out_features)} of the ResNet encoder: must be a non-empty subset of "
                f"{list(available)}."
            )
        self.resnet = resnet
        self._out_features = [name for name in available if name in out_features]
        self._out_feature_strides = {"res1": resnet.stem.stride // 2}
        self._out_feature_channels = {"res1": resnet.stem.out_channels}
        for name in resnet.stage_names:
            self._out_feature_strides[name] = resnet._out_feature_strides[name]
            self._out_feature_channels[name] = resnet._out_feature_channels[name]

    def stages(self):
        """ "res1": the stem's conv1 + ReLU; "res2": the stem's 3x3 max-pool, then the
        ResNet's res2; then res3.. as the ResNet runs them. The input's H and W must be
        divisible by :attr:`size_divisibility`."""
        resnet = self.resnet

        def stem_conv(x):
            return F.relu_(resnet.stem.conv1(x))

        def pooled(stage):
            return lambda x: stage(F.max_pool2d(x, kernel_size=3, stride=2, padding=1))

        named_stages = zip(resnet.stage_names, resnet.stages)
        return [("res1", stem_conv)] + [
            (name, pooled(stage) if k == 0 else stage)
            for k, (name, stage) in enumerate(named_stages)
        ]


@BACKBONE_REGISTRY.register()
def build_resnet_encoder_backbone(cfg, input_shape: ShapeSpec):
    """
    A :class:`ResNetEncoder` over ``build_resnet_backbone``; MODEL.RESNETS.OUT_FEATURES may
    list "res1" besides "res2".."res5".

    Returns:
        ResNetEncoder
    """
    out_features = list(cfg.MODEL.RESNETS.OUT_FEATURES)
    resnet_cfg = cfg.clone()
    resnet_cfg.defrost()
    stages = [name for name in out_features if name in _RESNET_STAGES]
    resnet_cfg.MODEL.RESNETS.OUT_FEATURES = stages or ["stem"]
    resnet = build_resnet_backbone(resnet_cfg, input_shape)
    return ResNetEncoder(resnet, out_features)
