"""
One node ``X(i, j) = H(fuse(inputs))`` of a nested (UNet++-style) decoder.
"""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.layers import DepthwiseSeparableConv2d
from torch import nn

from ..conv_blocks import conv3x3_norm_relu

__all__ = ["NODE_FUSIONS", "NODE_CONVS", "NestedNode"]

# "concat": concatenate along channels; "sum": element-wise sum; "avg": element-wise mean.
NODE_FUSIONS = ("concat", "sum", "avg")
# "plain": a 3x3 conv; "separable": a depthwise 3x3 conv followed by a pointwise 1x1 conv.
NODE_CONVS = ("plain", "separable")


class NestedNode(nn.Module):
    """
    Node ``X(i, j) = H(fuse(same_level + [U(below)]))``: fuses ``num_same_level`` feature maps of
    its own level with the 2x nearest up-sampling ``U`` of one map of the level below, then
    applies the node's conv block ``H`` (conv + norm + ReLU). Every map has ``channels`` channels.

    With ``fusion="concat"`` the conv block sees ``(num_same_level + 1) * channels`` input
    channels (the paper); with ``"sum"`` / ``"avg"`` it sees ``channels``. A ``"separable"``
    block normalizes after both of its convs and applies ReLU after the pointwise one.

    The node up-samples ``below`` itself: "sum" / "avg" add it by broadcasting (each pixel of
    ``below`` onto its 2x2 block), which never materializes the up-sampled map; the fused map
    keeps the inputs' memory layout (NCHW or channels-last).
    """

    def __init__(
        self, *, num_same_level: int, channels: int, fusion: str, node_conv: str, norm: str = ""
    ):
        """
        Args:
            num_same_level (int): how many maps of the node's own level it fuses (>= 1).
            channels (int): channels of every input and of the output.
            fusion (str): one of :data:`NODE_FUSIONS`.
            node_conv (str): one of :data:`NODE_CONVS`.
            norm (str): normalization after each conv, a :func:`get_norm` name ("" for none).
        """
        super().__init__()
        if fusion not in NODE_FUSIONS:
            raise ValueError(f"Unknown node fusion {fusion!r}; expected one of {NODE_FUSIONS}.")
        if node_conv not in NODE_CONVS:
            raise ValueError(f"Unknown node conv {node_conv!r}; expected one of {NODE_CONVS}.")
        self.num_same_level = num_same_level
        self.fusion = fusion
        num_inputs = num_same_level + 1
        in_channels = num_inputs * channels if fusion == "concat" else channels
        if node_conv == "plain":
            self.conv = conv3x3_norm_relu(in_channels, channels, norm)
        else:
            self.conv = DepthwiseSeparableConv2d(
                in_channels,
                channels,
                kernel_size=3,
                padding=1,
                norm1=norm,
                activation1=None,
                norm2=norm,
                activation2=F.relu_,
            )

    def forward(self, same_level: List[torch.Tensor], below: torch.Tensor) -> torch.Tensor:
        """
        Args:
            same_level (list[Tensor]): ``num_same_level`` maps of shape (N, channels, H, W).
            below (Tensor): shape (N, channels, H / 2, W / 2).

        Returns:
            Tensor: shape (N, channels, H, W).
        """
        n, c, h, w = below.shape
        if len(same_level) != self.num_same_level or same_level[0].shape != (n, c, 2 * h, 2 * w):
            raise ValueError(
                f"NestedNode expects {self.num_same_level} same-level maps of shape "
                f"(N, C, 2h, 2w) and one map (N, C, h, w) below; got "
                f"{[tuple(x.shape) for x in same_level]} and {tuple(below.shape)}."
            )
        if self.fusion == "concat":
            upsampled = F.interpolate(below, scale_factor=2.0, mode="nearest")
            return self.conv(torch.cat(same_level + [upsampled], dim=1))
        fused = same_level[0]
        if len(same_level) > 1:
            fused = same_level[0] + same_level[1]
            for feature in same_level[2:]:
                fused.add_(feature)
        fused = _add_upsampled(fused, below)
        if self.fusion == "avg":
            fused.mul_(1.0 / (self.num_same_level + 1))
        return self.conv(fused)


def _add_upsampled(base: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    """
    ``base + U(below)``, U the 2x nearest up-sampling, without materializing ``U(below)``:
    each pixel of ``below`` is broadcast onto its 2x2 block of ``base``.

    The sum is laid out like ``base``, NCHW or channels-last. A channels-last sum is computed
    in (N, H, W, C) order, where the maps are contiguous: broadcasting in NCHW order would
    allocate it with strides that, at batch size 1, send the next conv down a slow path that
    reorders its input and returns NCHW.

    Args:
        base (Tensor): (N, C, 2h, 2w).
        below (Tensor): (N, C, h, w).
    """
    n, c, h, w = below.shape
    if base.is_contiguous():
        fused = base.view(n, c, h, 2, w, 2) + below[:, :, :, None, :, None]
        return fused.view(n, c, 2 * h, 2 * w)
    base_nhwc, below_nhwc = base.permute(0, 2, 3, 1), below.permute(0, 2, 3, 1)
    fused = base_nhwc.reshape(n, h, 2, w, 2, c) + below_nhwc[:, :, None, :, None, :]
    return fused.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
