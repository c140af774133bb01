"""
Benchmark cases of the semantic UNet++ (:class:`SemanticUNetPlusPlus`):

- suite "unetpp_vs_smp": segmentation_models_pytorch's ``UnetPlusPlus`` (ResNet-34 encoder,
  random weights, decoder channels (256, 128, 64, 32, 16), one sigmoid output) against ours
  with Detectron2's ResNet-34 as the encoder (the same five maps at strides 2..32, 64 / 64 /
  128 / 256 / 512 channels) and one head (no deep supervision). smp's decoder nodes are not
  equally wide along a level: a level's last node has smp's decoder width and the nodes before
  it the encoder's, so at strides 4..16 smp's widths are 64 / 128 / 256 on every node and
  ``DECODER_CHANNELS [*, 64, 128, 256]`` matches them; at stride 2 smp has X(0,1..3) 64 wide and
  X(0,4) 32 wide, which one width per level cannot match: ours is timed with 32 (narrower
  than smp at X(0,1..3)) and with 64 (wider at X(0,4)). Other differences, by design: ours
  up-samples with a learned 2x2 transposed conv (smp: nearest) and predicts at stride 2 with a
  1x1 head and a bilinear up-sampling (smp: an extra block of two 3x3 convs 32 -> 16 at stride
  1 and a 3x3 head). Both are timed as networks on a normalized batch tensor; the training
  step uses the same hybrid loss (0.5 BCE + 1 - Dice) for both.
- suite "unetpp_levels": the paper's UNet++ (VGG-style encoder, deep supervision) at
  ``TEST_LEVEL`` 4 (the full network, the reference), 1, 2, 3 and the ensemble of the four
  heads; the record's notes give the parameters of the sub-network each level runs.
"""

import itertools
import os
from typing import List, Sequence

import torch
from detectron2.modeling import build_model
from torch import nn

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.modeling.unetpp.hybrid_loss import hybrid_loss, segmentation_probabilities

from .case import BenchmarkCase, Workload
from .flops import count_active_parameters
from .tensor_workload import TensorWorkload

__all__ = ["SMP_DECODER_CHANNELS", "unetpp_cases", "PredictProbabilities"]

SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# Ours against smp: DECODER_CHANNELS of levels 0..3 (strides 2..16), see the module docstring.
OURS_DECODER_CHANNELS = ((32, 64, 128, 256), (64, 64, 128, 256))
CE_WEIGHT = 0.5
IGNORE_VALUE = 255


class PredictProbabilities(nn.Module):
    """
    ``SemanticUNetPlusPlus`` inference on a batch: normalized (N, C, H, W) images (sides
    divisible by the model's ``size_divisibility``) -> (N, K, H, W) class probabilities from the
    head of ``test_level`` (k: only the sub-network of X(0, k) runs), or averaged over every
    head (``test_level=0``), as the model's own ``predict_probabilities`` does per image.
    """

    def __init__(self, model, test_level: int):
        super().__init__()
        self.model = model
        self.test_level = test_level

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.test_level == 0:
            logits = list(self.model.head_logits(images).values())
        else:
            logits = [self.model.head_logits(images, self.test_level)[self.test_level]]
        return sum(segmentation_probabilities(x) for x in logits) / len(logits)


def _batch(batch: int, size: int, device: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator).to(device)
    targets = (torch.rand(batch, size, size, generator=generator) < 0.3).long().to(device)
    return images, targets


def _ours_model(config: str, device: str, opts: Sequence[object]):
    cfg = setup_cfg(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device] + [str(o) for o in opts])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _ours_workload(model, test_level: int, batch: int, size: int, device: str) -> Workload:
    images, targets = _batch(batch, size, device)
    # The training forward normalizes raw images itself: give it images that normalize to
    # ``images``.
    raw = images * model.pixel_std + model.pixel_mean
    batched_inputs = [{"image": raw[k], "sem_seg": targets[k]} for k in range(batch)]
    workload = TensorWorkload(
        PredictProbabilities(model, test_level),
        images,
        train_loss=lambda _: sum(model(batched_inputs).values()),
    )
    with torch.inference_mode():
        active = count_active_parameters(model, lambda: workload.module(images))
    workload.notes = {"active_params_m": active / 1e6}
    return workload


def _smp_workload(batch: int, size: int, device: str) -> Workload:
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        raise ImportError(
            "suite unetpp_vs_smp needs segmentation_models_pytorch: install the 'bench' extra: "
            ".venv/bin/pip install -e '.[bench]'"
        ) from e

    torch.manual_seed(0)
    model = smp.UnetPlusPlus(
        encoder_name="resnet34",
        encoder_weights=None,
        decoder_channels=SMP_DECODER_CHANNELS,
        classes=1,
    ).to(device)
    images, targets = _batch(batch, size, device)

    def train_loss(module):
        return hybrid_loss(module(images), targets, ignore_value=IGNORE_VALUE, ce_weight=CE_WEIGHT)

    return TensorWorkload(model, images, train_loss=train_loss)


def unetpp_cases(
    *,
    smp_config: str,
    levels_config: str,
    sizes: Sequence[int],
    batch: int,
    devices: Sequence[str],
    suites: Sequence[str] = ("unetpp_vs_smp", "unetpp_levels"),
    train: bool = True,
) -> List[BenchmarkCase]:
    """
    Args:
        smp_config: our ResNet-34 UNet++ YAML (e.g. configs/DSB2018/unetpp_R_34.yaml).
        levels_config: the UNet++ YAML with deep supervision whose levels are timed (e.g.
            configs/DSB2018/unetpp_vgg.yaml).
        sizes: square input sizes (multiples of 32).
        batch: images per batch.
        devices: e.g. ["cpu", "cuda"].
        suites: which of "unetpp_vs_smp" and "unetpp_levels" to build.

    Returns:
        list[BenchmarkCase]: per suite, size and device: smp first (the reference), then ours;
        or TEST_LEVEL 4 first (the reference), then 1, 2, 3 and the ensemble.
    """
    cases = []

    def case(suite, model, variant, size, device, build, train_case, notes):
        return BenchmarkCase.square(
            suite, model, variant, size, device, build, batch=batch, train=train_case, notes=notes
        )

    for suite, size, device in itertools.product(suites, sizes, devices):
        if suite == "unetpp_vs_smp":
            cases.append(
                case(
                    suite,
                    "smp UnetPlusPlus",
                    f"resnet34, decoder {list(SMP_DECODER_CHANNELS)}",
                    size,
                    device,
                    lambda size=size, device=device: _smp_workload(batch, size, device),
                    train,
                    {"library": "segmentation_models_pytorch"},
                )
            )
            for channels in OURS_DECODER_CHANNELS:
                opts = [
                    "MODEL.UNETPP.DEEP_SUPERVISION", False,
                    "MODEL.UNETPP.DECODER_CHANNELS", list(channels),
                    "MODEL.UNETPP.TEST_LEVEL", 0,
                ]  # fmt: skip

                def build(size=size, device=device, opts=opts):
                    return _ours_workload(
                        _ours_model(smp_config, device, opts), 0, batch, size, device
                    )

                cases.append(
                    case(
                        suite,
                        "UNet++ (ours)",
                        f"R-34, DECODER_CHANNELS {list(channels)}",
                        size,
                        device,
                        build,
                        train,
                        {"config": os.path.relpath(smp_config)},
                    )
                )
        elif suite == "unetpp_levels":
            for level in (4, 1, 2, 3, 0):

                def build(size=size, device=device, level=level):
                    model = _ours_model(levels_config, device, ["MODEL.UNETPP.TEST_LEVEL", level])
                    return _ours_workload(model, level, batch, size, device)

                cases.append(
                    case(
                        suite,
                        "UNet++ (ours)",
                        f"TEST_LEVEL {level}" + (" (ensemble)" if level == 0 else ""),
                        size,
                        device,
                        build,
                        train and level == 4,  # training always runs the whole network
                        {"config": os.path.relpath(levels_config)},
                    )
                )
        else:
            raise ValueError(f"unknown UNet++ suite {suite!r}")
    return cases
