"""
The nested decoder of a semantic U-Net / UNet+ / UNet++: nodes ``X(i, j)`` over the encoder's
feature maps ``X(i, 0)``, wired by :func:`nested_node_inputs`, each node a concatenation
followed by two 3x3 conv + norm + ReLU, the level below entering through a 2x2 transposed
convolution (stride 2), as in the UNet++ paper.
"""

from collections import OrderedDict
from typing import Dict, List, Sequence

import torch
from torch import nn

from ..conv_blocks import conv3x3_norm_relu
from ..nested_graph import SKIP_DESIGNS, nested_node_inputs, output_node
from .conv_transpose_2x2 import ConvTranspose2x2

__all__ = ["UNET_SKIP_DESIGNS", "NestedDecoder", "NestedDecoderNode"]

# The semantic decoder's designs and the nested graph's names for them: U-Net's decoder is
# the graph's top-down chain ("top_down").
UNET_SKIP_DESIGNS = {"unet": "top_down", "unet+": "unet+", "unet++": "unet++"}
assert set(UNET_SKIP_DESIGNS.values()) == set(SKIP_DESIGNS)


class NestedDecoderNode(nn.Module):
    """
    ``X(i, j) = H([X(i, k) for k in same_level] ++ [T(X(i+1, j-1))])``: ``T`` is a 2x2
    transposed conv with stride 2 (``below_channels`` -> ``channels``), ``++`` concatenation
    along channels and ``H`` two 3x3 conv + norm + ReLU with ``channels`` outputs.
    """

    def __init__(
        self, *, same_level_channels: Sequence[int], below_channels: int, channels: int, norm: str
    ):
        """
        Args:
            same_level_channels (list[int]): channels of each same-level input, in order.
            below_channels (int): channels of ``X(i+1, j-1)``.
            channels (int): output channels of ``T`` and of the node.
            norm (str): normalization after each 3x3 conv, a :func:`get_norm` name.
        """
        super().__init__()
        self.up = ConvTranspose2x2(below_channels, channels)
        in_channels = sum(same_level_channels) + channels
        self.conv = nn.Sequential(
            OrderedDict(
                conv1=conv3x3_norm_relu(in_channels, channels, norm),
                conv2=conv3x3_norm_relu(channels, channels, norm),
            )
        )

    def forward(self, same_level: List[torch.Tensor], below: torch.Tensor) -> torch.Tensor:
        """
        Args:
            same_level (list[Tensor]): maps of shape (N, C_k, H, W).
            below (Tensor): shape (N, below_channels, H / 2, W / 2).

        Returns:
            Tensor: shape (N, channels, H, W).
        """
        return self.conv(torch.cat(same_level + [self.up(below)], dim=1))


class NestedDecoder(nn.Module):
    """
    Computes the decoder nodes ``X(i, j)``, j >= 1, from the encoder's L feature maps
    ``X(0..L-1, 0)`` (strides doubling from one level to the next) and returns the top
    row ``X(0, 1..L-1)`` that exists in the design.

    Node ``X(i, j)`` is the submodule ``"x_{i}_{j}"`` with ``channels[i]`` output channels.
    :meth:`forward` with ``depth=k`` computes only the nodes with ``i + j <= k``: the
    sub-network that feeds ``X(0, k)``, which needs only the encoder levels 0..k.
    """

    def __init__(
        self, *, in_channels: Sequence[int], channels: Sequence[int], skip: str, norm: str
    ):
        """
        Args:
            in_channels (list[int]): channels of the encoder maps ``X(i, 0)``, i = 0..L-1.
            channels (list[int]): output channels of the decoder nodes of each level
                i = 0..L-2 (an entry for level L-1 is allowed and unused).
            skip (str): "unet", "unet+" or "unet++" (see :data:`UNET_SKIP_DESIGNS`).
            norm (str): normalization inside the nodes, a :func:`get_norm` name.
        """
        super().__init__()
        if skip not in UNET_SKIP_DESIGNS:
            raise ValueError(
                f"MODEL.UNETPP.SKIP {skip!r}: expected one of {sorted(UNET_SKIP_DESIGNS)}."
            )
        self.num_levels = len(in_channels)
        if self.num_levels < 2:
            raise ValueError(f"A nested decoder needs >= 2 encoder levels, got {self.num_levels}.")
        if len(channels) < self.num_levels - 1:
            raise ValueError(
                f"Decoder channels {list(channels)}: need one entry per level 0..{self.num_levels - 2}."
            )
        self.skip = skip
        self._graph = nested_node_inputs(self.num_levels, UNET_SKIP_DESIGNS[skip])
        node_channels = {(i, 0): c for i, c in enumerate(in_channels)}
        for (i, j), inputs in self._graph.items():
            node_channels[(i, j)] = channels[i]
            self.add_module(
                f"x_{i}_{j}",
                NestedDecoderNode(
                    same_level_channels=[node_channels[n] for n in inputs.same_level],
                    below_channels=node_channels[inputs.below],
                    channels=channels[i],
                    norm=norm,
                ),
            )
        self.out_channels = channels[0]

    @property
    def top_row_columns(self) -> List[int]:
        """Columns j >= 1 of the top-row nodes ``X(0, j)`` that exist (all for UNet+/UNet++,
        only the last for U-Net)."""
        return [j for (i, j) in self._graph if i == 0]

    def forward(self, features: List[torch.Tensor], depth: int) -> Dict[int, torch.Tensor]:
        """
        Args:
            features (list[Tensor]): at least ``depth + 1`` encoder maps, level i of shape
                (N, in_channels[i], H / 2**i, W / 2**i) with H, W divisible by 2**depth.
            depth (int): 1..L-1; only the nodes with ``i + j <= depth`` are computed.

        Returns:
            dict[int -> Tensor]: column j -> ``X(0, j)`` of shape (N, channels[0], H, W), for
            every top-row node with j <= depth.
        """
        if not 1 <= depth < self.num_levels:
            raise ValueError(f"depth must be in 1..{self.num_levels - 1}, got {depth}.")
        if self.skip == "unet" and depth != self.num_levels - 1:
            raise ValueError(
                f"A U-Net decoder has no sub-network of depth {depth}: its only top-row node is "
                f"X{output_node(0, self.num_levels)}."
            )
        nodes = {(i, 0): features[i] for i in range(depth + 1)}
        for (i, j), inputs in self._graph.items():
            if i + j > depth:
                continue
            node = getattr(self, f"x_{i}_{j}")
            nodes[(i, j)] = node([nodes[n] for n in inputs.same_level], nodes[inputs.below])
        return {j: nodes[(0, j)] for j in range(1, depth + 1) if (0, j) in nodes}
