"""
Mask R-CNN++'s backbone: a feature pyramid whose top-down path is replaced by UNet++'s
nested-dense skip pathways, a drop-in for Detectron2's :class:`FPN`.
"""

import math

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from ..nested_graph import SKIP_DESIGNS, canonical_skip_design, nested_node_inputs, output_node
from .nested_node import NODE_CONVS, NestedNode

__all__ = ["NestedFPN", "build_resnet_nested_fpn_backbone", "build_nested_fpn_backbone"]

FUSIONS = ("concat", "sum")
FPN_FUSE_TYPES = ("sum", "avg")


class NestedFPN(Backbone):
    """
    A feature pyramid with nested-dense skip pathways (Mask R-CNN++). Same contract as
    Detectron2's :class:`FPN`: outputs "p<stage>" (stride 2**stage) with ``out_channels``
    channels each, plus the top block's levels (P6 by max-pooling the coarsest output).

    With L input features C_0..C_{L-1} (finest first), the nodes are (see
    :mod:`nested_graph` for which nodes each skip design has and what feeds them):

    - ``X(i, 0) = lateral_i(C_i)``, a 1x1 conv with ``norm`` like FPN's lateral conv;
    - ``X(i, j) = H(fuse(same-level nodes of X(i, j), U(X(i+1, j-1))))``, ``U`` nearest 2x
      up-sampling (as FPN), ``H`` a 3x3 (or depthwise-separable) conv + ``node_norm`` + ReLU;
    - the output of level i is ``output_i(X(i, L-1-i))``, a 3x3 conv with ``norm`` like
      FPN's output conv.

    Module names: the lateral and output convs, which have the shapes of FPN's, are named as
    in Detectron2's FPN (``fpn_lateral{stage}``, ``fpn_output{stage}``) and the bottom-up
    network is ``self.bottom_up``, so an FPN checkpoint (a Detectron2 model-zoo Mask R-CNN
    included) initializes everything but the nested nodes ``X(i, j)``, j >= 1, which are
    ``self.x_{i}_{j}``. Checkpoints that name the laterals ``x_{i}_0`` and the output convs
    ``output_p{stage}`` load as well (renamed on load).
    """

    @configurable
    def __init__(
        self,
        *,
        bottom_up,
        in_features,
        out_channels,
        norm="",
        top_block=None,
        fuse_type="sum",
        square_pad=0,
        skip="unet++",
        fusion="concat",
        node_conv="plain",
        node_norm="",
        cpu_channels_last=None,
    ):
        """
        Args:
            bottom_up (Backbone): the bottom-up network; its outputs named in
                ``in_features`` feed the pyramid.
            in_features (list[str]): bottom-up features, finest first, with strides doubling
                from one to the next (MODEL.FPN.IN_FEATURES).
            out_channels (int): channels of every node and every output (MODEL.FPN.OUT_CHANNELS).
            norm (str): normalization of the lateral and output convs (MODEL.FPN.NORM).
            top_block (nn.Module or None): extra coarser levels, as in FPN; its
                ``in_feature`` names a bottom-up feature or one of this module's outputs.
            fuse_type (str): MODEL.FPN.FUSE_TYPE. "sum", or "avg": with ``fusion="sum"`` a
                node takes the mean of its inputs instead of their sum (FPN's "avg" is the
                mean of its two inputs). "avg" has no meaning with ``fusion="concat"`` and is
                rejected there.
            square_pad (int): if > 0, input images must be padded to this square size.
            skip (str): skip design, one of "top_down", "unet+", "unet++" (MODEL.NESTED_FPN.SKIP;
                "fpn", an old name of "top_down", is accepted with a warning).
            fusion (str): "concat" or "sum" (MODEL.NESTED_FPN.FUSION).
            node_conv (str): "plain" or "separable" (MODEL.NESTED_FPN.NODE_CONV).
            node_norm (str): normalization inside the node convs (MODEL.NESTED_FPN.NORM).
            cpu_channels_last (bool or None): at inference on the CPU (eval mode), compute
                the pyramid (laterals, nodes, outputs) in channels-last memory: the bottom-up
                features are converted once, as they enter the lateral convs, and the outputs
                are returned in NCHW, as FPN returns them (the heads' ROIAlign would otherwise copy the
                channels-last maps to NCHW on every call: measured 1.137x -> 1.113x of Mask
                R-CNN's whole-model latency); features that come channels-last already (a
                channels-last model) are left so, and so are CUDA tensors.
                None (default): only with "separable" node convs, whose depthwise and 1x1
                convs run 1.7-2x faster so (oneDNN, 256 channels at 128x128); the plain 3x3
                convs over concatenations gain nothing and the conversions cost (measured:
                the paper's design went from 1.40x to 1.52x FPN's backbone latency).
                Training always computes in NCHW: on the CPU the backward pass of GroupNorm and
                BatchNorm is several times slower on channels-last tensors (measured: a bfloat16
                training step of the CPU Mask R-CNN++ recipe took 1.15x its NCHW time).
        """
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"bottom_up must be a detectron2 Backbone, got {type(bottom_up)}.")
        skip = canonical_skip_design(skip)
        for value, allowed, key in (
            (skip, SKIP_DESIGNS, "MODEL.NESTED_FPN.SKIP"),
            (fusion, FUSIONS, "MODEL.NESTED_FPN.FUSION"),
            (node_conv, NODE_CONVS, "MODEL.NESTED_FPN.NODE_CONV"),
            (fuse_type, FPN_FUSE_TYPES, "MODEL.FPN.FUSE_TYPE"),
        ):
            if value not in allowed:
                raise ValueError(f"{key} = {value!r} is not one of {allowed}.")
        if fuse_type == "avg" and fusion == "concat":
            raise ValueError(
                "MODEL.FPN.FUSE_TYPE = 'avg' averages fused inputs and only applies to "
                "MODEL.NESTED_FPN.FUSION = 'sum', not 'concat'."
            )
        strides = _check_in_features(bottom_up.output_shape(), in_features)
        num_levels = len(in_features)

        use_bias = norm == ""
        self._lateral_convs = []
        self._old_names = {}  # module names of checkpoints written before the FPN names
        self._output_convs = []
        for level, in_feature in enumerate(in_features):
            lateral_conv = Conv2d(
                bottom_up.output_shape()[in_feature].channels,
                out_channels,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            output_conv = Conv2d(
                out_channels,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            stage = int(math.log2(strides[level]))
            # named as in Detectron2's FPN, whose convs of these shapes they are: an FPN
            # checkpoint (model zoo included) initializes them
            self.add_module(f"fpn_lateral{stage}", lateral_conv)
            self.add_module(f"fpn_output{stage}", output_conv)
            self._old_names[f"x_{level}_0"] = f"fpn_lateral{stage}"
            self._old_names[f"output_p{stage}"] = f"fpn_output{stage}"
            self._lateral_convs.append(lateral_conv)
            self._output_convs.append(output_conv)

        node_fusion = "avg" if fuse_type == "avg" else fusion
        self._graph = nested_node_inputs(num_levels, skip)
        self._nodes = {}
        for (i, j), inputs in self._graph.items():
            node = NestedNode(
                num_same_level=len(inputs.same_level),
                channels=out_channels,
                fusion=node_fusion,
                node_conv=node_conv,
                norm=node_norm,
            )
            self.add_module(f"x_{i}_{j}", node)
            self._nodes[(i, j)] = node

        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.top_block = top_block
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            if (
                top_block.in_feature not in self._out_feature_strides
                and top_block.in_feature not in bottom_up.output_shape()
            ):
                raise ValueError(
                    f"top_block.in_feature = {top_block.in_feature!r} is neither a bottom-up "
                    f"feature {sorted(bottom_up.output_shape())} nor a pyramid level "
                    f"{list(self._out_feature_strides)}."
                )
            coarsest_stage = int(math.log2(strides[-1]))
            for k in range(1, top_block.num_levels + 1):
                self._out_feature_strides[f"p{coarsest_stage + k}"] = strides[-1] * 2**k
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad
        self.cpu_channels_last = (
            node_conv == "separable" if cpu_channels_last is None else cpu_channels_last
        )

    @classmethod
    def from_config(cls, cfg, bottom_up):
        """
        Args:
            cfg (CfgNode): reads MODEL.FPN.* and MODEL.NESTED_FPN.*.
            bottom_up (Backbone): the bottom-up network, already built.
        """
        in_features = list(cfg.MODEL.FPN.IN_FEATURES)
        strides = _check_in_features(bottom_up.output_shape(), in_features)
        # FPN's P6 max-pools P5, its coarsest output; keep "the coarsest output" for any L.
        top_block = LastLevelMaxPool()
        top_block.in_feature = f"p{int(math.log2(strides[-1]))}"
        return {
            "bottom_up": bottom_up,
            "in_features": in_features,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "top_block": top_block,
            "fuse_type": cfg.MODEL.FPN.FUSE_TYPE,
            "skip": cfg.MODEL.NESTED_FPN.SKIP,
            "fusion": cfg.MODEL.NESTED_FPN.FUSION,
            "node_conv": cfg.MODEL.NESTED_FPN.NODE_CONV,
            "node_norm": cfg.MODEL.NESTED_FPN.NORM,
        }

    @property
    def size_divisibility(self):
        return self._size_divisibility

    @property
    def padding_constraints(self):
        return {"square_size": self._square_pad}

    def forward(self, x):
        """
        Args:
            x (Tensor): images of shape (N, C, H, W), H and W divisible by
                ``size_divisibility``.

        Returns:
            dict[str->Tensor]: "p<stage>" -> (N, out_channels, H / 2**stage, W / 2**stage),
            finest first, e.g. {"p2", ..., "p6"}.
        """
        bottom_up_features = self.bottom_up(x)
        finest = bottom_up_features[self.in_features[0]]
        # the pyramid's own channels-last layout is undone at the outputs; a layout the
        # caller chose (e.g. a channels-last model and input) is kept
        converts_layout = self._computes_channels_last(finest) and not finest.is_contiguous(
            memory_format=torch.channels_last
        )
        nodes = {
            (level, 0): lateral_conv(self._to_pyramid_layout(bottom_up_features[in_feature]))
            for level, (in_feature, lateral_conv) in enumerate(
                zip(self.in_features, self._lateral_convs)
            )
        }
        # Each node up-samples its `below` input itself: every node is the `below` of one
        # node at most (see nested_graph), so no map is up-sampled twice.
        for node, inputs in self._graph.items():
            same_level = [nodes[k] for k in inputs.same_level]
            nodes[node] = self._nodes[node](same_level, nodes[inputs.below])

        num_levels = len(self.in_features)
        results = [
            output_conv(nodes[output_node(level, num_levels)])
            for level, output_conv in enumerate(self._output_convs)
        ]
        if converts_layout:
            results = [result.contiguous() for result in results]
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_input = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_input = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_input))
        return dict(zip(self._out_features, results))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the laterals and output convs took FPN's names
        for old, new in self._old_names.items():
            for key in [k for k in state_dict if k.startswith(f"{prefix}{old}.")]:
                state_dict[f"{prefix}{new}{key[len(prefix + old) :]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _computes_channels_last(self, feature):
        """Whether the pyramid over ``feature`` is computed channels-last: at inference on the
        CPU, when ``cpu_channels_last`` is on."""
        return self.cpu_channels_last and not self.training and feature.device.type == "cpu"

    def _to_pyramid_layout(self, feature):
        """A bottom-up feature in the memory layout the pyramid is computed in."""
        if self._computes_channels_last(feature):
            return feature.contiguous(memory_format=torch.channels_last)
        return feature

    def output_shape(self):
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def _check_in_features(input_shapes, in_features):
    """
    Check that ``in_features`` name bottom-up outputs with log2-contiguous strides, finest first.

    Args:
        input_shapes (dict[str->ShapeSpec]): the bottom-up network's ``output_shape()``.
        in_features (list[str]): MODEL.FPN.IN_FEATURES.

    Returns:
        list[int]: the stride of each feature in ``in_features``.
    """
    available = ", ".join(f"{name} (stride {s.stride})" for name, s in input_shapes.items())
    if not in_features:
        raise ValueError(f"MODEL.FPN.IN_FEATURES is empty; the bottom-up outputs {available}.")
    missing = [name for name in in_features if name not in input_shapes]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {list(in_features)}: {missing} not produced by the "
            f"bottom-up network, which outputs {available}."
        )
    strides = [input_shapes[name].stride for name in in_features]
    for (prev_name, prev_stride), (name, stride) in zip(
        zip(in_features, strides), zip(in_features[1:], strides[1:])
    ):
        if stride != 2 * prev_stride:
            raise ValueError(
                f"MODEL.FPN.IN_FEATURES {list(in_features)} must have log2-contiguous strides, "
                f"finest first: {prev_name} (stride {prev_stride}) is followed by {name} "
                f"(stride {stride}). The bottom-up network outputs {available}."
            )
    return strides


@BACKBONE_REGISTRY.register()
def build_resnet_nested_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    The drop-in for ``build_resnet_fpn_backbone``: a ResNet bottom-up (MODEL.RESNETS.*) under
    a :class:`NestedFPN`. Ignores MODEL.NESTED_FPN.BOTTOM_UP.

    Returns:
        NestedFPN
    """
    return NestedFPN(cfg, build_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_nested_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    A :class:`NestedFPN` over the bottom-up network registered in BACKBONE_REGISTRY under
    MODEL.NESTED_FPN.BOTTOM_UP.

    Returns:
        NestedFPN
    """
    name = cfg.MODEL.NESTED_FPN.BOTTOM_UP
    registered = sorted(registered_name for registered_name, _ in BACKBONE_REGISTRY)
    if name not in registered or name == "build_nested_fpn_backbone":
        raise ValueError(
            f"MODEL.NESTED_FPN.BOTTOM_UP = {name!r} is not a bottom-up network in "
            f"BACKBONE_REGISTRY (other than build_nested_fpn_backbone itself); registered: "
            f"{registered}."
        )
    return NestedFPN(cfg, BACKBONE_REGISTRY.get(name)(cfg, input_shape))
