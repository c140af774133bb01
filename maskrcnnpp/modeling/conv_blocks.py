"""Conv blocks shared by the nested FPN's nodes and the VGG-style encoder."""

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm

__all__ = ["conv3x3_norm_relu"]


def conv3x3_norm_relu(in_channels: int, out_channels: int, norm: str = "") -> Conv2d:
    """
    A 3x3 conv (padding 1, bias only without norm), then ``norm``, then an in-place ReLU;
    He (MSRA) initialization. Maps (N, in_channels, H, W) to (N, out_channels, H, W).

    Args:
        norm (str): a :func:`get_norm` name, "" for none.
    """
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        padding=1,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu_,
    )
    weight_init.c2_msra_fill(conv)
    return conv
