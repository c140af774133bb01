"""
The nested-dense FPN (Mask R-CNN++ backbone) and the VGG-style encoder: FPN's contract, the
node graph of every skip design, gradients, checkpoints and the shipped configs.
"""

import glob
import itertools
import logging
import os
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from maskrcnnpp import add_maskrcnnpp_config
from maskrcnnpp.modeling.backbone import VGG, NestedFPN
from maskrcnnpp.modeling.backbone.nested_node import NestedNode
from maskrcnnpp.modeling.backbone.vgg import build_vgg_backbone
from maskrcnnpp.modeling.nested_graph import NodeInputs, nested_node_inputs

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs"
)
DESIGNS = list(
    itertools.product(("top_down", "unet+", "unet++"), ("concat", "sum"), ("plain", "separable"))
)

# Hand-written node graphs for L = 4 levels: node -> (same-level inputs, up-sampled input).
EXPECTED_GRAPHS = {
    "unet++": {
        (0, 1): ([(0, 0)], (1, 0)),
        (1, 1): ([(1, 0)], (2, 0)),
        (2, 1): ([(2, 0)], (3, 0)),
        (0, 2): ([(0, 0), (0, 1)], (1, 1)),
        (1, 2): ([(1, 0), (1, 1)], (2, 1)),
        (0, 3): ([(0, 0), (0, 1), (0, 2)], (1, 2)),
    },
    "unet+": {
        (0, 1): ([(0, 0)], (1, 0)),
        (1, 1): ([(1, 0)], (2, 0)),
        (2, 1): ([(2, 0)], (3, 0)),
        (0, 2): ([(0, 1)], (1, 1)),
        (1, 2): ([(1, 1)], (2, 1)),
        (0, 3): ([(0, 2)], (1, 2)),
    },
    "top_down": {
        (2, 1): ([(2, 0)], (3, 0)),
        (1, 2): ([(1, 0)], (2, 1)),
        (0, 3): ([(0, 0)], (1, 2)),
    },
}


def small_cfg(
    backbone_name="build_resnet_nested_fpn_backbone",
    skip="unet++",
    fusion="concat",
    node_conv="plain",
):
    """A narrow ResNet-18 under a 16-channel pyramid: fast on CPU."""
    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    cfg.MODEL.BACKBONE.NAME = backbone_name
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.NESTED_FPN.SKIP = skip
    cfg.MODEL.NESTED_FPN.FUSION = fusion
    cfg.MODEL.NESTED_FPN.NODE_CONV = node_conv
    return cfg


def node_modules(backbone):
    """{(i, j): module} for every node of a NestedFPN: the laterals X(i, 0) (named
    ``fpn_lateral{stage}``, level i = stage - 2 here) and every ``x_i_j`` child."""
    nodes = {}
    for name, module in backbone.named_children():
        if name.startswith("x_"):
            nodes[tuple(int(k) for k in name.split("_")[1:])] = module
        elif name.startswith("fpn_lateral"):
            nodes[(int(name[len("fpn_lateral") :]) - 2, 0)] = module
    return nodes


@pytest.mark.parametrize("skip,fusion,node_conv", DESIGNS)
def test_contract_matches_fpn_and_every_node_learns(skip, fusion, node_conv):
    cfg = small_cfg(skip=skip, fusion=fusion, node_conv=node_conv)
    torch.manual_seed(0)
    nested = build_backbone(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    fpn = build_backbone(cfg)
    assert isinstance(nested, NestedFPN) and isinstance(fpn, FPN)
    assert nested.output_shape() == fpn.output_shape()
    assert list(nested.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert nested.size_divisibility == fpn.size_divisibility == 32
    assert nested.padding_constraints == fpn.padding_constraints

    nodes = node_modules(nested)
    assert set(nodes) == set(EXPECTED_GRAPHS[skip]) | {(i, 0) for i in range(4)}
    nested.bottom_up.requires_grad_(False)  # only the pyramid's gradients are checked below
    images = torch.randn(2, 3, 64, 96)
    nested_out = nested(images)
    with torch.no_grad():
        fpn_out = fpn(images)
    assert list(nested_out) == list(fpn_out)
    for name in fpn_out:
        assert nested_out[name].shape == fpn_out[name].shape
        assert nested_out[name].shape[1] == 16

    sum(out.sum() for out in nested_out.values()).backward()
    for node, module in nodes.items():
        for name, param in module.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, (node, name)


@pytest.mark.parametrize("skip", ["top_down", "unet+", "unet++"])
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_graph_matches_hand_written_wiring(skip, fusion):
    """Hook every node: each one must be fed exactly the nodes of the hand-written graph, and
    its conv block must see their fusion, the node below up-sampled 2x (nearest) last."""
    expected = EXPECTED_GRAPHS[skip]
    assert nested_node_inputs(4, skip) == {
        node: NodeInputs(tuple(same), below) for node, (same, below) in expected.items()
    }
    torch.manual_seed(0)
    backbone = build_backbone(small_cfg(skip=skip, fusion=fusion))
    outputs, inputs, conv_inputs = {}, {}, {}
    for node, module in node_modules(backbone).items():
        module.register_forward_hook(lambda m, args, out, node=node: outputs.update({node: out}))
        if isinstance(module, NestedNode):
            module.register_forward_pre_hook(lambda m, args, node=node: inputs.update({node: args}))
            module.conv.register_forward_pre_hook(
                lambda m, args, node=node: conv_inputs.update({node: args[0].clone()})
            )
    output_conv_inputs = {}
    for stage in range(2, 6):
        getattr(backbone, f"fpn_output{stage}").register_forward_pre_hook(
            lambda m, args, stage=stage: output_conv_inputs.update({stage: args[0]})
        )
    with torch.no_grad():
        backbone(torch.randn(1, 3, 64, 64))

    assert set(inputs) == set(expected)
    for node, (same_level, below) in expected.items():
        fed_same_level, fed_below = inputs[node]
        assert len(fed_same_level) == len(same_level), node
        for tensor, source in zip(fed_same_level, same_level):
            assert tensor is outputs[source], (node, source)
        assert fed_below is outputs[below], (node, below)
        maps = [outputs[k] for k in same_level]
        maps.append(F.interpolate(outputs[below], scale_factor=2.0, mode="nearest"))
        fused = torch.cat(maps, dim=1) if fusion == "concat" else sum(maps[1:], maps[0])
        torch.testing.assert_close(conv_inputs[node], fused, rtol=0, atol=0)
    # p2..p5 come from the deepest node of each level: X(0,3), X(1,2), X(2,1), X(3,0)
    for level, stage in enumerate(range(2, 6)):
        assert output_conv_inputs[stage] is outputs[(level, 3 - level)]


@pytest.mark.parametrize("num_levels", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("skip", ["top_down", "unet+", "unet++"])
def test_graph_any_number_of_levels(num_levels, skip):
    graph = nested_node_inputs(num_levels, skip)
    done = {(i, 0) for i in range(num_levels)}
    for node, inputs in graph.items():  # iteration order is a computation order
        assert set(inputs.same_level) <= done and inputs.below in done, node
        done.add(node)
    belows = [inputs.below for inputs in graph.values()]
    assert len(belows) == len(set(belows))  # no map is up-sampled twice
    deepest = {(i, num_levels - 1 - i) for i in range(num_levels)}
    assert deepest <= done  # every level has its output node
    if skip == "top_down":
        assert set(graph) == deepest - {(num_levels - 1, 0)}
    else:
        assert set(graph) == {(i, j) for i in range(num_levels) for j in range(1, num_levels - i)}


def test_avg_fuse_type_takes_the_mean():
    torch.manual_seed(0)
    node_sum = NestedNode(num_same_level=2, channels=8, fusion="sum", node_conv="plain")
    node_avg = NestedNode(num_same_level=2, channels=8, fusion="avg", node_conv="plain")
    node_avg.load_state_dict(node_sum.state_dict())
    same_level = [torch.randn(1, 8, 6, 4) for _ in range(2)]
    below = torch.randn(1, 8, 3, 2)
    torch.testing.assert_close(
        node_avg(same_level, below), node_sum([f / 3 for f in same_level], below / 3)
    )
    with pytest.raises(ValueError, match=r"\(1, 8, 6, 4\).*\(1, 8, 2, 2\)"):
        node_sum(same_level, torch.randn(1, 8, 2, 2))  # not half the size

    cfg = small_cfg(fusion="sum")
    cfg.MODEL.FPN.FUSE_TYPE = "avg"
    assert build_backbone(cfg).x_0_3.fusion == "avg"


@pytest.mark.parametrize("num_same_level", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_sum_node_equals_explicit_upsampling_and_leaves_its_inputs(num_same_level, channels_last):
    torch.manual_seed(0)
    node = NestedNode(num_same_level=num_same_level, channels=8, fusion="sum", node_conv="plain")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    same_level = [
        torch.randn(2, 8, 6, 4).contiguous(memory_format=layout) for _ in range(num_same_level)
    ]
    below = torch.randn(2, 8, 3, 2).contiguous(memory_format=layout)
    originals = [f.clone() for f in same_level + [below]]
    fused = sum(same_level) + torch.nn.functional.interpolate(below, scale_factor=2.0)
    with torch.no_grad():
        expected = node.conv(fused.contiguous())
        output = node(same_level, below)
    torch.testing.assert_close(output, expected)
    for before, after in zip(originals, same_level + [below]):
        assert torch.equal(before, after)  # the node adds into its own buffer only


def test_norms_go_where_their_keys_say():
    cfg = small_cfg(node_conv="separable")
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FPN.NORM = "BN"  # laterals and output convs, as in FPN
    cfg.MODEL.NESTED_FPN.NORM = "GN"  # node convs
    backbone = build_backbone(cfg)
    assert isinstance(backbone.fpn_lateral3.norm, torch.nn.BatchNorm2d)
    assert isinstance(backbone.fpn_output3.norm, torch.nn.BatchNorm2d)
    assert backbone.fpn_lateral3.bias is None  # a norm follows: no bias, as in FPN
    assert isinstance(backbone.x_0_3.conv.depthwise.norm, torch.nn.GroupNorm)
    assert isinstance(backbone.x_0_3.conv.pointwise.norm, torch.nn.GroupNorm)
    assert backbone.x_0_3.conv.depthwise.weight.shape[0] == 4 * 32  # concat of 4 inputs
    outputs = backbone(torch.randn(2, 3, 64, 64))
    assert outputs["p2"].shape == (2, 32, 16, 16)


@pytest.mark.parametrize(
    "in_features,stages",
    [
        (["res3", "res4", "res5"], [3, 4, 5, 6]),  # L = 3, P6 from P5 as in FPN
        (["res2", "res3", "res4"], [2, 3, 4, 5]),  # L = 3, the extra level pools P4
    ],
)
def test_any_number_of_levels(in_features, stages):
    cfg = small_cfg()
    cfg.MODEL.FPN.IN_FEATURES = in_features
    backbone = build_backbone(cfg)
    assert {(i, j) for (i, j) in node_modules(backbone) if j > 0} == {(0, 1), (1, 1), (0, 2)}
    outputs = backbone(torch.randn(1, 3, 64, 64))
    assert list(outputs) == [f"p{s}" for s in stages]
    for stage in stages:
        assert outputs[f"p{stage}"].shape[-2:] == (64 // 2**stage, 64 // 2**stage)
    assert torch.equal(outputs[f"p{stages[-1]}"], F.max_pool2d(outputs[f"p{stages[-2]}"], 1, 2))


def test_top_block_input_must_exist():
    bottom_up = build_backbone(small_cfg()).bottom_up
    with pytest.raises(ValueError, match=r"top_block.in_feature = 'p5'.*\['p2', 'p3', 'p4'\]"):
        NestedFPN(
            bottom_up=bottom_up,
            in_features=["res2", "res3", "res4"],
            out_channels=16,
            top_block=LastLevelMaxPool(),  # pools "p5", which these levels do not make
        )


def test_vgg_bottom_up_five_levels_matches_fpn_contract():
    cfg = small_cfg(backbone_name="build_nested_fpn_backbone")
    cfg.MODEL.NESTED_FPN.BOTTOM_UP = "build_vgg_backbone"
    cfg.MODEL.VGG.STAGE_CHANNELS = [8, 8, 16, 16, 32, 32]
    cfg.MODEL.VGG.OUT_FEATURES = ["vgg1", "vgg2", "vgg3", "vgg4", "vgg5"]
    cfg.MODEL.FPN.IN_FEATURES = ["vgg1", "vgg2", "vgg3", "vgg4", "vgg5"]
    nested = build_backbone(cfg)
    assert isinstance(nested.bottom_up, VGG)
    assert (0, 4) in node_modules(nested)
    fpn = FPN(
        bottom_up=nested.bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=16,
        top_block=nested.top_block,
    )
    assert nested.output_shape() == fpn.output_shape()
    outputs = nested(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[-1] for k, v in outputs.items()} == {
        "p1": 32,
        "p2": 16,
        "p3": 8,
        "p4": 4,
        "p5": 2,
        "p6": 1,
    }


def test_vgg_encoder():
    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    cfg.MODEL.VGG.OUT_FEATURES = ["vgg0", "vgg2", "vgg3"]
    cfg.MODEL.VGG.NORM = "GN"
    encoder = build_vgg_backbone(cfg, ShapeSpec(channels=1))
    assert {k: (s.channels, s.stride) for k, s in encoder.output_shape().items()} == {
        "vgg0": (32, 1),
        "vgg2": (128, 4),
        "vgg3": (256, 8),
    }
    assert not hasattr(encoder, "vgg4")  # deeper than any requested output: not built
    outputs = encoder(torch.randn(2, 1, 32, 32))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "vgg0": (2, 32, 32, 32),
        "vgg2": (2, 128, 8, 8),
        "vgg3": (2, 256, 4, 4),
    }
    assert (outputs["vgg3"] >= 0).all()  # ends in ReLU

    cfg.MODEL.VGG.OUT_FEATURES = ["vgg2", "vgg7"]
    with pytest.raises(ValueError, match=r"MODEL.VGG.OUT_FEATURES.*vgg7.*vgg4"):
        build_vgg_backbone(cfg, ShapeSpec(channels=1))


@pytest.mark.parametrize(
    "in_features,message",
    [
        (
            ["res2", "res4"],
            r"res2 \(stride 4\) is followed by res4 \(stride 16\).*res3 \(stride 8\)",
        ),
        (["res3", "res2"], r"res3 \(stride 8\) is followed by res2 \(stride 4\)"),
        (["res2", "res3", "c6"], r"\['c6'\] not produced.*res2 \(stride 4\).*res5 \(stride 32\)"),
        ([], r"MODEL.FPN.IN_FEATURES is empty"),
    ],
)
def test_invalid_in_features(in_features, message):
    cfg = small_cfg()
    cfg.MODEL.FPN.IN_FEATURES = in_features
    with pytest.raises(ValueError, match=message):
        build_backbone(cfg)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.NESTED_FPN.SKIP", "dense", r"MODEL.NESTED_FPN.SKIP = 'dense'.*unet\+\+"),
        ("MODEL.NESTED_FPN.FUSION", "mul", r"MODEL.NESTED_FPN.FUSION = 'mul'"),
        ("MODEL.NESTED_FPN.NODE_CONV", "3x3", r"MODEL.NESTED_FPN.NODE_CONV = '3x3'"),
        ("MODEL.FPN.FUSE_TYPE", "avg", r"FUSE_TYPE = 'avg'.*'concat'"),
        ("MODEL.FPN.FUSE_TYPE", "max", r"MODEL.FPN.FUSE_TYPE = 'max'"),
    ],
)
def test_invalid_design_keys(key, value, message):
    cfg = small_cfg(fusion="concat")
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=message):
        build_backbone(cfg)


@pytest.mark.parametrize("bottom_up", ["build_resnet_backbon", "build_nested_fpn_backbone"])
def test_bottom_up_must_be_registered(bottom_up):
    cfg = small_cfg(backbone_name="build_nested_fpn_backbone")
    cfg.MODEL.NESTED_FPN.BOTTOM_UP = bottom_up
    with pytest.raises(ValueError, match=rf"'{bottom_up}'.*'build_resnet_backbone'.*'build_vgg"):
        build_backbone(cfg)


def test_resnet_builders_agree():
    """build_nested_fpn_backbone with the default BOTTOM_UP is build_resnet_nested_fpn_backbone."""
    cfg = small_cfg()
    torch.manual_seed(0)
    by_resnet_builder = build_backbone(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_nested_fpn_backbone"
    torch.manual_seed(0)
    by_registry = build_backbone(cfg)
    assert isinstance(by_registry.bottom_up, ResNet)
    assert by_resnet_builder.state_dict().keys() == by_registry.state_dict().keys()


def test_save_load_round_trip(tmp_path):
    cfg = small_cfg(fusion="sum", node_conv="separable")
    cfg.MODEL.NESTED_FPN.NORM = "BN"  # running statistics are buffers: they must round-trip
    torch.manual_seed(0)
    saved = build_backbone(cfg)
    saved(torch.randn(4, 3, 64, 64))  # train mode: moves the BN running statistics
    saved.eval()
    DetectionCheckpointer(saved, save_dir=str(tmp_path)).save("nested")

    torch.manual_seed(1)
    loaded = build_backbone(cfg).eval()
    assert not torch.equal(loaded.x_0_3.conv.pointwise.weight, saved.x_0_3.conv.pointwise.weight)
    DetectionCheckpointer(loaded).load(str(tmp_path / "nested.pth"))
    saved_state, loaded_state = saved.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    assert "x_0_3.conv.pointwise.norm.running_mean" in saved_state
    for key in saved_state:
        assert torch.equal(saved_state[key], loaded_state[key]), key
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for name, out in saved(images).items():
            assert torch.equal(out, loaded(images)[name]), name


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def quick_cfg(name):
    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def _load_logged(model, path):
    checkpointer = DetectionCheckpointer(model)
    records = _Records()
    checkpointer.logger.addHandler(records)  # independent of how logging is set up elsewhere
    try:
        checkpointer.load(str(path))
    finally:
        checkpointer.logger.removeHandler(records)
    return "\n".join(records.messages)


def _nested_node_keys(state):
    """Keys of the nested nodes X(i, j), j >= 1: what an FPN checkpoint cannot hold."""
    return {k for k in state if re.match(r"backbone\.x_\d+_[1-9]\d*\.", k)}


@pytest.mark.parametrize("checkpoint_format", ["pth", "pkl"])
def test_fpn_checkpoint_initializes_all_but_the_nested_nodes(tmp_path, checkpoint_format):
    """A Mask R-CNN (FPN) checkpoint, as Detectron2 writes it (.pth) or in the model zoo's
    .pkl form (numpy arrays, "__author__", matched by name heuristics), initializes every
    weight of Mask R-CNN++ but the nested nodes, and the log names exactly those as missing."""
    torch.manual_seed(0)
    fpn_model = build_model(quick_cfg("quick/mask_rcnn_FPN.yaml"))
    fpn_state = {k: v.clone() for k, v in fpn_model.state_dict().items()}
    if checkpoint_format == "pth":
        DetectionCheckpointer(fpn_model, save_dir=str(tmp_path)).save("fpn")
    else:
        with open(tmp_path / "fpn.pkl", "wb") as f:
            pickle.dump(
                {
                    "model": {k: v.numpy() for k, v in fpn_state.items()},
                    "__author__": "Detectron2 Model Zoo",
                },
                f,
            )
    torch.manual_seed(1)
    nested_model = build_model(quick_cfg("quick/mask_rcnn_NestedFPN.yaml"))
    log = _load_logged(nested_model, tmp_path / f"fpn.{checkpoint_format}")

    nested_state = nested_model.state_dict()
    nested_nodes = _nested_node_keys(nested_state)
    assert nested_nodes and all(".x_0_0." not in k for k in nested_state)
    for key in nested_state:
        if key not in nested_nodes and not key.endswith("num_batches_tracked"):
            assert torch.equal(nested_state[key], fpn_state[key]), key
    assert "backbone.fpn_lateral2" not in log and "backbone.fpn_output5" not in log
    missing = log.split("not found in the checkpoint")[-1]
    for key in ("backbone.x_0_1", "backbone.x_0_3", "backbone.x_2_1"):
        assert key in missing, key
    assert (
        "roi_heads" not in missing
        and "proposal_generator" not in missing
        and "bottom_up" not in missing
    )


def test_checkpoint_with_the_old_lateral_and_output_names_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model(quick_cfg("quick/mask_rcnn_NestedFPN.yaml"))
    state = model.state_dict()
    old = {}
    for key, value in state.items():
        key = re.sub(
            r"backbone\.fpn_lateral(\d)\.", lambda m: f"backbone.x_{int(m.group(1)) - 2}_0.", key
        )
        old[re.sub(r"backbone\.fpn_output(\d)\.", r"backbone.output_p\1.", key)] = value.clone()
    assert "backbone.x_0_0.weight" in old and "backbone.output_p2.weight" in old
    torch.save({"model": old}, tmp_path / "old.pth")
    torch.manual_seed(1)
    fresh = build_model(quick_cfg("quick/mask_rcnn_NestedFPN.yaml"))
    incompatible = DetectionCheckpointer(fresh)._load_model({"model": dict(old)})
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_old_skip_name_fpn_is_top_down_with_a_warning():
    cfg = quick_cfg("quick/mask_rcnn_NestedFPN.yaml")
    cfg.MODEL.NESTED_FPN.SKIP = "fpn"
    with pytest.warns(FutureWarning, match="'fpn' is now called 'top_down'"):
        model = build_model(cfg)
    cfg.MODEL.NESTED_FPN.SKIP = "top_down"
    reference = build_model(cfg)
    assert model.backbone.state_dict().keys() == reference.backbone.state_dict().keys()


def shipped_nested_configs():
    return sorted(
        os.path.relpath(path, CONFIG_DIR)
        for path in glob.glob(os.path.join(CONFIG_DIR, "**", "*NestedFPN*.yaml"), recursive=True)
    )


def flatten(node, prefix=""):
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize(
    "nested_name,fpn_name",
    [
        ("quick/mask_rcnn_NestedFPN.yaml", "quick/mask_rcnn_FPN.yaml"),
        ("DSB2018/mask_rcnn_R_50_NestedFPN.yaml", "DSB2018/mask_rcnn_R_50_FPN.yaml"),
    ],
)
def test_nested_configs_are_twins_of_fpn_configs(nested_name, fpn_name):
    nested, fpn = flatten(quick_cfg(nested_name)), flatten(quick_cfg(fpn_name))
    differing = {k for k in nested if nested[k] != fpn[k]}
    assert differing - {"OUTPUT_DIR"} == {"MODEL.BACKBONE.NAME"} | {
        k for k in differing if k.startswith("MODEL.NESTED_FPN.")
    }
    assert nested["MODEL.BACKBONE.NAME"] == "build_resnet_nested_fpn_backbone"
    assert nested["OUTPUT_DIR"] != fpn["OUTPUT_DIR"]


def random_training_image(size=128, num_objects=3):
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
    masks = torch.zeros(num_objects, size, size, dtype=torch.bool)
    boxes = []
    for k in range(num_objects):
        x0, y0 = 10 + 35 * k, 20 + 25 * k
        masks[k, y0 : y0 + 20, x0 : x0 + 24] = True
        boxes.append([x0, y0, x0 + 24, y0 + 20])
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.gt_classes = torch.zeros(num_objects, dtype=torch.int64)
    instances.gt_masks = BitMasks(masks)
    return {"image": image, "height": size, "width": size, "instances": instances}


def test_nested_configs_are_shipped():
    assert {
        "quick/mask_rcnn_NestedFPN.yaml",
        "quick/mask_rcnn_VGG_NestedFPN.yaml",
        "DSB2018/mask_rcnn_R_50_NestedFPN.yaml",
        "DSB2018/mask_rcnn_R_101_NestedFPN.yaml",
    } <= set(shipped_nested_configs())


@pytest.mark.parametrize("config_name", shipped_nested_configs())
def test_shipped_config_trains_and_infers(config_name):
    """Every shipped Mask R-CNN++ config: one training step, then inference, on CPU."""
    cfg = quick_cfg(config_name)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.backbone, NestedFPN)
    if cfg.MODEL.NESTED_FPN.BOTTOM_UP == "build_vgg_backbone" and (
        cfg.MODEL.BACKBONE.NAME == "build_nested_fpn_backbone"
    ):
        assert isinstance(model.backbone.bottom_up, VGG)
    else:
        assert isinstance(model.backbone.bottom_up, ResNet)
        num_blocks = sum(len(stage) for stage in model.backbone.bottom_up.stages)
        assert num_blocks == {18: 8, 50: 16, 101: 33}[cfg.MODEL.RESNETS.DEPTH]

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with EventStorage():
        losses = model([random_training_image()])
    assert {"loss_mask", "loss_rpn_cls", "loss_cls"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for node, module in node_modules(model.backbone).items():
        for name, param in module.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), (node, name)
    optimizer.step()

    model.eval()
    with torch.no_grad():
        image = torch.randint(0, 256, (3, 128, 96), dtype=torch.uint8)
        (output,) = model([{"image": image, "height": 128, "width": 96}])
    instances = output["instances"]
    assert instances.image_size == (128, 96)
    assert instances.has("pred_masks")
    assert instances.pred_masks.shape[-2:] == (128, 96)
