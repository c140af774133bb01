"""
Inference speed-ups of the nested FPN keep its outputs: norms folded into convs, and
channels-last memory, each against the eager NCHW model.
"""

import copy

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_backbone
from torch import nn

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp_bench.norm_folding import fold_conv_norms


def _nested_fpn(skip, fusion, node_conv, norm):
    cfg = setup_cfg(
        "",
        [
            "MODEL.BACKBONE.NAME", "build_resnet_nested_fpn_backbone",
            "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
            "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
            "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.FPN.NORM", norm,
            "MODEL.NESTED_FPN.SKIP", skip, "MODEL.NESTED_FPN.FUSION", fusion,
            "MODEL.NESTED_FPN.NODE_CONV", node_conv, "MODEL.NESTED_FPN.NORM", norm,
            "MODEL.DEVICE", "cpu",
        ],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_backbone(cfg)
    # Norms with non-trivial statistics and affine parameters, so that folding has work to do.
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _max_relative_difference(a, b):
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a)


@pytest.mark.parametrize(
    "skip,fusion,node_conv,norm",
    [
        ("unet++", "sum", "separable", "BN"),
        ("unet++", "concat", "plain", "BN"),
        ("unet+", "sum", "plain", "FrozenBN"),
        ("top_down", "sum", "separable", ""),
    ],
)
def test_folding_norms_keeps_the_outputs(skip, fusion, node_conv, norm):
    model = _nested_fpn(skip, fusion, node_conv, norm)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        eager = model(image)
        folded_model = copy.deepcopy(model)
        folded = fold_conv_norms(folded_model)
        after = folded_model(image)
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    normed = [m for m in convs if m.norm is not None]
    assert folded == len(normed) > 0  # the bottom-up's FrozenBNs at least
    assert all(m.norm is None for m in folded_model.modules() if isinstance(m, Conv2d))
    assert _max_relative_difference(eager, after) < 1e-5


def test_group_norm_is_not_folded_and_training_mode_is_refused():
    model = _nested_fpn("unet++", "sum", "separable", "GN")
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    group_norms = [m for m in convs if isinstance(m.norm, nn.GroupNorm)]
    frozen = [m for m in convs if isinstance(m.norm, FrozenBatchNorm2d)]
    assert fold_conv_norms(model) == len(frozen)  # the bottom-up's
    assert group_norms and all(isinstance(m.norm, nn.GroupNorm) for m in group_norms)
    with pytest.raises(ValueError, match="eval"):
        fold_conv_norms(model.train())


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_channels_last_keeps_the_outputs(fusion):
    model = _nested_fpn("unet++", fusion, "separable", "")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = model(image)
        channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        after = channels_last(image.contiguous(memory_format=torch.channels_last))
    assert _max_relative_difference(eager, after) < 1e-5


@pytest.mark.parametrize("node_conv", ["separable", "plain"])
def test_cpu_channels_last_pyramid_keeps_the_outputs(node_conv):
    model = _nested_fpn("unet++", "sum", node_conv, "")
    assert model.cpu_channels_last == (node_conv == "separable")  # the measured default
    image = torch.randn(1, 3, 64, 96)
    node_layouts = []
    model.x_0_3.register_forward_hook(
        lambda module, inputs, output: node_layouts.append(
            output.is_contiguous(memory_format=torch.channels_last)
        )
    )
    with torch.no_grad():
        model.cpu_channels_last = True
        channels_last = model(image)
        model.cpu_channels_last = False
        nchw = model(image)
    assert node_layouts == [True, False]  # the pyramid is computed channels-last, or not
    # either way the outputs are NCHW, as FPN's: the heads' ROIAlign needs no copies
    assert all(out.is_contiguous() for out in list(channels_last.values()) + list(nchw.values()))
    # a channels-last model on a channels-last input keeps channels-last outputs
    model.cpu_channels_last = True
    with torch.no_grad():
        chosen = copy.deepcopy(model).to(memory_format=torch.channels_last)(
            image.contiguous(memory_format=torch.channels_last)
        )
    assert chosen["p2"].is_contiguous(memory_format=torch.channels_last)
    assert _max_relative_difference(nchw, chosen) < 1e-5
    assert _max_relative_difference(nchw, channels_last) < 1e-5
    # training computes in NCHW (the CPU backward of the norms is slow on channels-last)
    model.cpu_channels_last = True
    model.train()
    sum(out.square().mean() for out in model(image).values()).backward()
    assert node_layouts[-1] is False
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.x_0_3.parameters())
