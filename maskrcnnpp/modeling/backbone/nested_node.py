"""
One node ``X(i, j) = H(fuse(inputs))`` of a nested (UNet++-style) decoder.
"""

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import DepthwiseSeparableConv2d

from .layers import conv3x3_norm_relu

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
    ``below`` onto its 2x2 block), which never materializes the up-sampled map.
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
        # (N, C, h, 1, w, 1) broadcasts onto the 2x2 blocks of (N, C, h, 2, w, 2)
        below_blocks = below[:, :, :, None, :, None]
        if len(same_level) == 1:
            fused = same_level[0].view(n, c, h, 2, w, 2) + below_blocks
        else:
            fused = (same_level[0] + same_level[1]).view(n, c, h, 2, w, 2)
            for feature in same_level[2:]:
                fused.add_(feature.view(n, c, h, 2, w, 2))
            fused.add_(below_blocks)
        if self.fusion == "avg":
            fused.mul_(1.0 / (self.num_same_level + 1))
        return self.conv(fused.reshape(n, c, 2 * h, 2 * w))
