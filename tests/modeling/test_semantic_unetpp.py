"""Semantic UNet++: shapes, pruning, the hybrid loss, parameter counts, encoders, windows."""

import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

import maskrcnnpp  # noqa: F401
from maskrcnnpp.config import setup_cfg
from maskrcnnpp.modeling.unetpp import hybrid_loss, sliding_window_predict, window_starts

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
NARROW = ["MODEL.VGG.STAGE_CHANNELS", [4, 8, 16, 32, 64], "MODEL.DEVICE", "cpu"]


def build(config="DSB2018/unetpp_vgg.yaml", opts=()):
    torch.manual_seed(0)
    return build_model(setup_cfg(str(CONFIG_DIR / config), NARROW + list(opts)))


def image(height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)


def count_convs(model, fn):
    """How many conv / transposed-conv modules run during fn()."""
    calls = []
    hooks = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    try:
        result = fn()
    finally:
        for h in hooks:
            h.remove()
    return result, len(calls)


@pytest.mark.parametrize("test_level", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("size", [(97, 131), (1, 1), (96, 96), (17, 250)])
def test_output_size_equals_input_size(test_level, size):
    model = build(opts=["MODEL.UNETPP.TEST_LEVEL", test_level]).eval()
    with torch.no_grad():
        out = model([{"image": image(*size)}])[0]["sem_seg"]
    assert out.shape == (2,) + size
    assert torch.allclose(out.sum(0), torch.ones(size), atol=1e-5)


def test_output_resized_to_requested_height_width():
    model = build().eval()
    with torch.no_grad():
        out = model([{"image": image(50, 60), "height": 100, "width": 120}])[0]["sem_seg"]
    assert out.shape == (2, 100, 120)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_pruned_level_equals_full_network_head_and_runs_fewer_ops(level):
    model = build().eval()
    x = (image(64, 96).float()[None] - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        full, full_convs = count_convs(model, lambda: model.head_logits(x))
        pruned, pruned_convs = count_convs(model, lambda: model.head_logits(x, depth=level))
    assert sorted(pruned) == list(range(1, level + 1))
    torch.testing.assert_close(pruned[level], full[level], rtol=1e-5, atol=1e-5)
    assert pruned_convs < full_convs
    # Level k runs encoder levels 0..k (2 convs each), k(k+1)/2 nodes (up + 2 convs) and k heads.
    assert pruned_convs == 2 * (level + 1) + 3 * level * (level + 1) // 2 + level
    # ... and not one conv of the deeper encoder stages.
    deeper = [m for name, m in model.encoder.named_children() if int(name[3:]) > level]
    _, deeper_calls = count_convs(
        torch.nn.ModuleList(deeper), lambda: model.head_logits(x, depth=level)
    )
    assert deeper_calls == 0


def test_test_level_selects_head_and_ensemble_averages():
    model = build().eval()
    img = image(40, 56)
    outs = {}
    with torch.no_grad():
        for level in range(5):
            model.test_level = level
            outs[level] = model([{"image": img}])[0]["sem_seg"]
    torch.testing.assert_close(outs[0], sum(outs[k] for k in range(1, 5)) / 4, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(outs[1], outs[4])


@pytest.mark.parametrize("test_level", [0, 2])
def test_dihedral_mean_is_the_mean_of_the_eight_views_mapped_back(test_level):
    model = build(opts=["MODEL.UNETPP.TEST_LEVEL", test_level]).eval()
    img = image(40, 56)
    with torch.no_grad():
        views = []
        for k in range(4):
            for flip in (False, True):
                view = torch.rot90(img, k, dims=(1, 2))
                view = view.flip(2) if flip else view
                probs = model([{"image": view}])[0]["sem_seg"]
                probs = probs.flip(2) if flip else probs
                views.append(torch.rot90(probs, -k, dims=(1, 2)))
        plain = model([{"image": img}])[0]["sem_seg"]
        model.test_dihedral_mean = True
        mean = model([{"image": img}])[0]["sem_seg"]
        # the mean of a flipped image is the mean of the image, flipped / rotated
        flipped = model([{"image": img.flip(1)}])[0]["sem_seg"]
        rotated = model([{"image": torch.rot90(img, 1, dims=(1, 2))}])[0]["sem_seg"]
    assert mean.shape == (2, 40, 56)
    torch.testing.assert_close(mean, torch.stack(views).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flipped, mean.flip(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rotated, torch.rot90(mean, 1, dims=(1, 2)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(
        mean, plain, atol=1e-4
    )  # the views differ: the mean is not the plain output


def test_dihedral_mean_is_read_from_the_config():
    assert build(opts=["MODEL.UNETPP.TEST_DIHEDRAL_MEAN", True]).test_dihedral_mean
    assert not build().test_dihedral_mean


def test_invalid_test_level_and_designs_are_named():
    with pytest.raises(ValueError, match="TEST_LEVEL 5"):
        build(opts=["MODEL.UNETPP.TEST_LEVEL", 5])
    with pytest.raises(ValueError, match="TEST_LEVEL 2"):
        build("DSB2018/unetpp_vgg_nods.yaml", ["MODEL.UNETPP.TEST_LEVEL", 2])
    with pytest.raises(ValueError, match="DEEP_SUPERVISION"):
        build("DSB2018/unet_vgg.yaml", ["MODEL.UNETPP.DEEP_SUPERVISION", True])
    with pytest.raises(ValueError, match="LOSS_WEIGHTS"):
        build(opts=["MODEL.UNETPP.LOSS_WEIGHTS", [1.0, 2.0]])
    with pytest.raises(ValueError, match="SLIDING_WINDOW_OVERLAP 1.0"):
        build(opts=["MODEL.UNETPP.SLIDING_WINDOW_OVERLAP", 1.0])
    with pytest.raises(ValueError, match="MODEL.UNETPP.SKIP 'unet3'"):
        build(opts=["MODEL.UNETPP.SKIP", "unet3"])
    with pytest.raises(ValueError, match=r"IN_FEATURES .*strides"):
        build(opts=["MODEL.UNETPP.IN_FEATURES", ["vgg0", "vgg2", "vgg3"]])


def test_unknown_encoder_lists_registered_ones():
    with pytest.raises(
        (KeyError, ValueError), match=r"MODEL.UNETPP.ENCODER.*build_vgg'.*build_vgg_backbone"
    ):
        build(opts=["MODEL.UNETPP.ENCODER", "build_vgg"])


# ---------------------------------------------------------------------------- hybrid loss
def test_hybrid_loss_binary_hand_computed():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 255.0]]]])  # (1, 1, 2, 2)
    targets = torch.tensor([[[0, 1], [1, 255]]])  # last pixel ignored
    p = [0.5, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.0))]
    y = [0, 1, 1]
    bce = -np.mean([yi * np.log(pi) + (1 - yi) * np.log(1 - pi) for pi, yi in zip(p, y)])
    dice = 2 * (p[1] + p[2]) / (2 + sum(p) + 1e-6)
    expected = 0.5 * bce + 1 - dice
    got = hybrid_loss(logits, targets, ignore_value=255, ce_weight=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hybrid_loss_multiclass_hand_computed():
    logits = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 3.0]]]])  # (1, 3, 1, 2)
    targets = torch.tensor([[[0, 2]]])
    probs = F.softmax(logits, dim=1)[0, :, 0].numpy()  # (3, 2)
    ce = -np.mean([np.log(probs[0, 0]), np.log(probs[2, 1])])
    onehot = np.array([[1, 0], [0, 0], [0, 1]], float)
    dice = np.mean(
        [
            2 * (onehot[c] * probs[c]).sum() / (onehot[c].sum() + probs[c].sum() + 1e-6)
            for c in range(3)
        ]
    )
    got = hybrid_loss(logits, targets, ignore_value=255, ce_weight=1.0)
    assert got.item() == pytest.approx(ce + 1 - dice, rel=1e-6)


def test_hybrid_loss_nonnegative_even_when_perfect():
    targets = torch.randint(0, 2, (2, 8, 8))
    perfect = (targets[:, None].float() * 2 - 1) * 30
    loss = hybrid_loss(perfect, targets, ignore_value=255, ce_weight=0.5)
    assert 0 <= loss.item() < 1e-6
    with pytest.raises(ValueError, match="target value 7"):
        hybrid_loss(perfect, targets * 7, ignore_value=255, ce_weight=0.5)


@pytest.mark.parametrize(
    "config", ["DSB2018/unetpp_vgg.yaml", "DSB2018/unetpp_vgg_nods.yaml", "DSB2018/unet_vgg.yaml"]
)
def test_training_loss_nonnegative_and_every_parameter_gets_gradient(config):
    model = build(config).train()
    batch = [
        {"image": image(48, 40, s), "sem_seg": torch.randint(0, 2, (48, 40))} for s in range(2)
    ]
    batch[1]["sem_seg"][:5] = 255
    losses = model(batch)
    expected_heads = 4 if "nods" not in config and "unet_" not in config else 1
    assert len(losses) == expected_heads
    assert all(v.item() >= 0 for v in losses.values())
    sum(losses.values()).backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert no_grad == []


def test_multiclass_model_trains_and_predicts():
    model = build(opts=["MODEL.UNETPP.NUM_CLASSES", 3]).train()
    losses = model([{"image": image(32, 32), "sem_seg": torch.randint(0, 3, (32, 32))}])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": image(33, 35)}])[0]["sem_seg"]
    assert out.shape == (3, 33, 35)


# ---------------------------------------------------------------------------- paper configs
@pytest.mark.parametrize(
    "config, paper_millions",
    [
        ("DSB2018/unet_vgg.yaml", 7.76),
        ("DSB2018/wide_unet_vgg.yaml", 9.13),
        ("DSB2018/unetpp_vgg.yaml", 9.04),
        ("DSB2018/unetpp_vgg_nods.yaml", 9.04),
    ],
)
def test_parameter_counts_match_the_paper(config, paper_millions):
    model = build_model(setup_cfg(str(CONFIG_DIR / config), ["MODEL.DEVICE", "cpu"]))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - paper_millions) / paper_millions < 0.03, params


def test_resnet_encoder_prunes_too():
    model = build("DSB2018/unetpp_R_34.yaml", ["MODEL.RESNETS.DEPTH", 18]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model.head_logits(x)
        pruned, _ = count_convs(model, lambda: model.head_logits(x, depth=2))
        res4_calls = count_convs(model.encoder.resnet.res4, lambda: model.head_logits(x, depth=2))[
            1
        ]
    torch.testing.assert_close(pruned[2], full[2], rtol=1e-5, atol=1e-5)
    assert res4_calls == 0
    assert full[4].shape == (1, 1, 64, 64)


# ---------------------------------------------------------------------------- sliding window
@pytest.mark.parametrize(
    "length, window, overlap", [(10, 4, 0.5), (1000, 512, 0.25), (513, 512, 0.0), (5, 8, 0.25)]
)
def test_window_starts_cover_with_overlap(length, window, overlap):
    starts = window_starts(length, window, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
        assert 0 <= s and s + min(window, length) <= length
    assert covered.all()
    for a, b in zip(starts, starts[1:]):
        assert a + window - b >= overlap * window - 1


def test_sliding_window_equals_whole_image_for_a_pixelwise_predictor():
    img = torch.rand(3, 70, 90)
    predict = lambda crop: torch.stack([crop.sum(0), crop[0] * 2])  # noqa: E731
    out = sliding_window_predict(img, predict, window=32, overlap=0.25)
    torch.testing.assert_close(out, predict(img))


def test_model_uses_sliding_windows_on_large_images():
    model = build(opts=["MODEL.UNETPP.SLIDING_WINDOW_SIZE", 64]).eval()
    calls = []
    original = model._whole_image_head_probabilities
    model._whole_image_head_probabilities = lambda x, d: (
        calls.append(tuple(x.shape[-2:])) or original(x, d)
    )
    with torch.no_grad():
        out = model([{"image": image(100, 150)}])[0]["sem_seg"]
        heads = model.head_probabilities(model.normalize_image(image(100, 150)))
    assert out.shape == (2, 100, 150) and heads.shape == (4, 2, 100, 150)
    torch.testing.assert_close(out, heads.mean(0))
    assert len(calls) > 1 and max(max(c) for c in calls) <= 64


@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_2x2_equals_torch_transposed_conv(bias):
    from maskrcnnpp.modeling.unetpp.conv_transpose_2x2 import ConvTranspose2x2

    torch.manual_seed(0)
    ours = ConvTranspose2x2(6, 5)
    if not bias:
        ours.bias = None
    reference = torch.nn.ConvTranspose2d(6, 5, kernel_size=2, stride=2, bias=bias)
    reference.load_state_dict(ours.state_dict())  # same parameter names and shapes
    x = torch.randn(2, 6, 7, 9, requires_grad=True)
    torch.testing.assert_close(ours(x), reference(x))
    # gradients too: the weight reshuffle is differentiable
    (ours(x) * torch.arange(5.0)[:, None, None]).sum().backward()
    expected = torch.autograd.grad(
        (reference(x) * torch.arange(5.0)[:, None, None]).sum(), reference.weight
    )[0]
    torch.testing.assert_close(ours.weight.grad, expected)
