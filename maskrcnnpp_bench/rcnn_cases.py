"""
Benchmark cases of Mask R-CNN (FPN) against Mask R-CNN++ (nested FPN designs), on the same
ResNet bottom-up and random weights:

- suite "rcnn_backbone": the backbone alone (bottom-up + neck), ``(1, 3, S, S)`` input;
- suite "rcnn_model": the whole detector with the numbers of proposals and detections pinned:
  RPN NMS off (``MODEL.RPN.NMS_THRESH 1.0``) so every model keeps exactly
  ``POST_NMS_TOPK_TEST`` proposals, and box score threshold 0 with NMS off
  (``SCORE_THRESH_TEST 0``, ``NMS_THRESH_TEST 1.0``) so every model keeps exactly
  ``TEST.DETECTIONS_PER_IMAGE`` detections; random-init heads would otherwise keep different
  numbers of boxes and make the race unfair. Without trained weights the RPN's objectness
  and box-delta layers, the box classifier and the box-delta layer of the box head are
  zeroed as well, so that every model keeps the *same boxes*, not only as many: all anchors
  score alike, the proposals are the same anchors (equal scores and boxes, so every model's
  top-k and NMS choose alike) and the detections the same proposals. Equal counts alone are not enough:
  ROIAlign's adaptive sampling costs grow with box area, and random objectness logits made
  one model pick larger anchors than another (measured: roi_align took 250 ms in one model
  and 66 ms in the other for the same 1000 + 100 boxes). Zero deltas also keep a random
  ResNet's large activations from pushing boxes off the image, where clipping empties them,
  and a zero classifier keeps scores from underflowing to 0 below the threshold.
  The kept counts are recorded with each timing. The pinned counts default to 1000 proposals
  and 100 detections (Detectron2's defaults; DSB2018 val images hold 25 nuclei at the median
  and 84 at the 90th percentile), not the nuclei config's limits of 2000 / 500, where the mask
  head on 500 boxes alone costs ~230 GMACs and every backbone difference vanishes.
"""

import contextlib
import itertools
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.events import EventStorage

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.modeling.backbone.nested_fpn import FUSIONS
from maskrcnnpp.modeling.nested_graph import SKIP_DESIGNS

from .case import BenchmarkCase, Workload
from .tensor_workload import TensorWorkload

__all__ = [
    "FPN_VARIANT",
    "DEFAULT_NESTED_DESIGNS",
    "PAPER_DESIGN",
    "PINNED_COUNT_OPTS",
    "rcnn_cases",
    "quick_training_cases",
    "pinned_count_thresholds",
    "DetectorWorkload",
]

FPN_VARIANT = "FPN"
# The paper-faithful node: dense skips, concatenation, a plain 3x3 conv.
PAPER_DESIGN = "unet++/concat/plain"
# Every skip design x fusion with the default (separable) node conv, then the paper's design.
DEFAULT_NESTED_DESIGNS = tuple(
    f"{skip}/{fusion}/separable" for skip, fusion in itertools.product(SKIP_DESIGNS, FUSIONS)
) + (PAPER_DESIGN,)

PINNED_COUNT_OPTS = (
    "MODEL.RPN.NMS_THRESH", 1.0,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST", 1.0,
)  # fmt: skip


def _design_opts(variant: str) -> List[object]:
    if variant == FPN_VARIANT:
        return ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"]
    skip, fusion, node_conv = variant.split("/")
    return [
        "MODEL.BACKBONE.NAME", "build_resnet_nested_fpn_backbone",
        "MODEL.NESTED_FPN.SKIP", skip,
        "MODEL.NESTED_FPN.FUSION", fusion,
        "MODEL.NESTED_FPN.NODE_CONV", node_conv,
    ]  # fmt: skip


def rcnn_config(base_config: str, variant: str, *, depth: int, device: str, extra_opts=()):
    """
    The detector config of one variant: ``base_config`` with random weights, a ResNet-``depth``
    bottom-up (None: the config's), the variant's backbone, and ``extra_opts``.
    """
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device]
    if depth:
        opts += ["MODEL.RESNETS.DEPTH", depth]
        if depth in (18, 34):
            opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
    opts += _design_opts(variant) + list(extra_opts)
    return setup_cfg(base_config, [str(o) if isinstance(o, float) else o for o in opts])


def random_nuclei_instances(height: int, width: int, num: int, seed: int) -> Instances:
    """
    ``num`` random elliptical "nuclei" (6..48 px) as ground truth: boxes, class 0, bit masks.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((num, height, width), dtype=bool)
    yy, xx = np.mgrid[:height, :width]
    boxes = []
    for k in range(num):
        ry, rx = rng.uniform(3, 24, size=2)
        cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
        masks[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        ys, xs = np.nonzero(masks[k])
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.gt_classes = torch.zeros(num, dtype=torch.int64)
    instances.gt_masks = BitMasks(torch.from_numpy(masks))
    return instances


class DetectorWorkload(Workload):
    """
    A Detectron2 meta-architecture on a batch of images: inference on ``[{"image", "height",
    "width"}, ...]``; a training step on the same images with random ground-truth nuclei.
    Counts the proposals and detections it keeps (over the batch).
    """

    def __init__(
        self,
        model,
        images: Sequence[torch.Tensor],
        *,
        num_gt: int = 32,
        seed: int = 0,
        lr=0.0,
        pin_counts_at_inference: bool = False,
    ):
        """
        Args:
            model: a built Detectron2 model (e.g. GeneralizedRCNN).
            images: (3, H, W) float images in the model's input format (0..255).
            lr: of the timed SGD step. 0 (default) does the same work but leaves the weights
                as they are (BatchNorm's running statistics still move in training mode), so
                the inference timed after a training step keeps the pinned counts (a real
                update of a random R-50 diverges within steps).
            pin_counts_at_inference: apply the thresholds of :data:`PINNED_COUNT_OPTS` to
                inference only (see :func:`pinned_count_thresholds`), so that the training
                step runs with the config's own RPN NMS.
        """
        self.module = model.eval()
        self._pin_counts_at_inference = pin_counts_at_inference
        self.inputs = [
            {"image": image, "height": image.shape[-2], "width": image.shape[-1]}
            for image in images
        ]
        self.train_inputs = [
            dict(x, instances=random_nuclei_instances(x["height"], x["width"], num_gt, seed + k))
            for k, x in enumerate(self.inputs)
        ]
        self._optimizer = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9
        )
        self._num_proposals = None
        generator = getattr(model, "proposal_generator", None)
        if generator is not None:
            generator.register_forward_hook(self._count_proposals)

    def _count_proposals(self, module, inputs, output):
        self._num_proposals = sum(len(proposals) for proposals in output[0])

    def infer(self) -> Dict[str, int]:
        pinning = (
            pinned_count_thresholds(self.module)
            if self._pin_counts_at_inference
            else contextlib.nullcontext()
        )
        with torch.no_grad(), pinning:
            outputs = self.module(self.inputs)
        counts = {}
        if self._num_proposals is not None:
            counts["proposals"] = self._num_proposals
        if "instances" in outputs[0]:
            counts["detections"] = sum(len(output["instances"]) for output in outputs)
        return counts

    def train_step(self) -> None:
        self.module.train()
        try:
            with EventStorage():  # the heads log training statistics into it
                losses = self.module(self.train_inputs)
            self._optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            self._optimizer.step()
        finally:
            self.module.eval()

    def gflops(self) -> float:
        with torch.no_grad():
            analysis = FlopCountAnalysis(self.module, self.inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return analysis.total() / 1e9


@contextlib.contextmanager
def pinned_count_thresholds(model):
    """
    For the duration, a GeneralizedRCNN runs with the thresholds of
    :data:`PINNED_COUNT_OPTS`: RPN NMS off (it applies in training too when set in the
    config), box score threshold 0 and box NMS off.
    """
    rpn, predictor = model.proposal_generator, model.roi_heads.box_predictor
    saved = rpn.nms_thresh, predictor.test_score_thresh, predictor.test_nms_thresh
    rpn.nms_thresh, predictor.test_score_thresh, predictor.test_nms_thresh = 1.0, 0.0, 1.0
    try:
        yield
    finally:
        rpn.nms_thresh, predictor.test_score_thresh, predictor.test_nms_thresh = saved


def pin_box_outputs(model) -> None:
    """
    Zero the RPN's objectness and box-delta layers and the box head's classifier and
    box-delta layers of a GeneralizedRCNN (weights and biases). Then every anchor scores
    alike, the proposals are the same clipped anchors in every model whatever its backbone,
    the detections are those proposals, and each scores 1 / (classes + 1) >
    SCORE_THRESH_TEST 0. (A random classifier on a random ResNet's large activations gives
    softmax scores that underflow to exactly 0, and such boxes are dropped: one model then
    keeps none.)
    """
    layers = [
        model.proposal_generator.rpn_head.objectness_logits,
        model.proposal_generator.rpn_head.anchor_deltas,
        model.roi_heads.box_predictor.bbox_pred,
        model.roi_heads.box_predictor.cls_score,
    ]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()


def _random_image(height: int, width: int, device: str, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(3, height, width, generator=generator) * 255).to(device)


def _backbone_builder(base_config, variant, depth, device, size, opts):
    def build() -> Workload:
        cfg = rcnn_config(base_config, variant, depth=depth, device=device, extra_opts=opts)
        torch.manual_seed(0)
        backbone = build_backbone(cfg).to(device)
        return TensorWorkload(backbone, _random_image(size, size, device)[None])

    return build


def _model_builder(base_config, variant, depth, device, size, weights, proposals, detections, opts):
    def build() -> Workload:
        counts = [
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            proposals,
            "TEST.DETECTIONS_PER_IMAGE",
            detections,
        ]
        cfg = rcnn_config(
            base_config,
            variant,
            depth=depth,
            device=device,
            extra_opts=list(opts) + list(PINNED_COUNT_OPTS) + counts,
        )
        torch.manual_seed(0)
        model = build_model(cfg)
        if weights:
            DetectionCheckpointer(model).load(weights)
        else:
            pin_box_outputs(model)
        return DetectorWorkload(model, [_random_image(size, size, device)])

    return build


def rcnn_cases(
    base_config: str,
    *,
    sizes: Sequence[int],
    devices: Sequence[str],
    depth: Optional[int] = 50,
    designs: Iterable[str] = DEFAULT_NESTED_DESIGNS,
    suites: Sequence[str] = ("rcnn_backbone", "rcnn_model"),
    train: bool = True,
    weights: Optional[Dict[str, str]] = None,
    proposals: int = 1000,
    detections: int = 100,
    opts: Sequence[object] = (),
) -> List[BenchmarkCase]:
    """
    Args:
        base_config: the detector YAML both models start from (FPN or not: the backbone is set).
        sizes: square input sizes.
        devices: e.g. ["cpu", "cuda"].
        depth: MODEL.RESNETS.DEPTH of the shared bottom-up (None: the config's).
        designs: nested FPN variants "skip/fusion/node_conv", timed against FPN.
        suites: which of "rcnn_backbone" and "rcnn_model" to build.
        weights: optional variant -> checkpoint for "rcnn_model" (trained heads keep their own
            counts; the pinned thresholds still apply).
        proposals, detections: pinned counts of "rcnn_model" (MODEL.RPN.POST_NMS_TOPK_TEST,
            TEST.DETECTIONS_PER_IMAGE).
        opts: further KEY VALUE config overrides for every model (before the pinning ones).

    Returns:
        list[BenchmarkCase]: for each suite, size and device, FPN first, then each design.
    """
    designs = list(designs)
    known = ["/".join(d) for d in itertools.product(SKIP_DESIGNS, FUSIONS, ("plain", "separable"))]
    unknown = [d for d in designs if d not in known]
    if unknown:
        raise ValueError(f"nested FPN designs {unknown} unknown; choose among {known}.")
    cases = []
    for suite, size, device in itertools.product(suites, sizes, devices):
        for variant in [FPN_VARIANT] + designs:
            if suite == "rcnn_backbone":
                build = _backbone_builder(base_config, variant, depth, device, size, opts)
            elif suite == "rcnn_model":
                variant_weights = (weights or {}).get(variant)
                build = _model_builder(
                    base_config,
                    variant,
                    depth,
                    device,
                    size,
                    variant_weights,
                    proposals,
                    detections,
                    opts,
                )
            else:
                raise ValueError(f"unknown Mask R-CNN suite {suite!r}")
            notes = {
                "bottom_up": f"ResNet-{depth}" if depth else "the config's",
                "config": os.path.relpath(base_config),
                "weights": (weights or {}).get(variant, "random")
                if suite == "rcnn_model"
                else "random",
            }
            model = "Mask R-CNN" if variant == FPN_VARIANT else "Mask R-CNN++"
            cases.append(
                BenchmarkCase.square(
                    suite, model, variant, size, device, build, train=train, notes=notes
                )
            )
    return cases


def quick_training_cases(configs: Sequence[str], *, devices: Sequence[str], train: bool = True):
    """
    Suite "rcnn_quick_training": training configs as they are (e.g. the README's main job,
    ``configs/quick/mask_rcnn_{FPN,NestedFPN}.yaml``), on one batch of
    ``SOLVER.IMS_PER_BATCH`` random ``MIN_SIZE_TRAIN[0]``-square images with 32 random nuclei
    each: the training step's time and peak memory with the configs' own settings, and
    inference on the same batch with the configs' proposal and detection limits pinned as in
    "rcnn_model" (the pinning thresholds apply to inference only). Weights are random, with
    the layers of :func:`pin_box_outputs` zeroed, and the timed step is plain SGD at lr 0
    (see :class:`DetectorWorkload`), not the configs' optimizer with gradient clipping.

    Args:
        configs: detector YAMLs; the first is the reference of the ratios. All must share
            the batch and input size (they are timed side by side).

    Returns:
        list[BenchmarkCase]: one per config and device.
    """
    cases = []
    for device in devices:
        for path in configs:
            cfg = setup_cfg(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device])
            batch, size = cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.MIN_SIZE_TRAIN[0]

            def build(path=path, batch=batch, size=size, device=device) -> Workload:
                cfg = setup_cfg(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device])
                torch.manual_seed(0)
                model = build_model(cfg)
                pin_box_outputs(model)
                images = [_random_image(size, size, device, seed=k) for k in range(batch)]
                return DetectorWorkload(model, images, pin_counts_at_inference=True)

            nested = "nested" in cfg.MODEL.BACKBONE.NAME
            cases.append(
                BenchmarkCase(
                    "rcnn_quick_training",
                    "Mask R-CNN++" if nested else "Mask R-CNN",
                    os.path.splitext(os.path.basename(path))[0],
                    size,
                    size,
                    device,
                    build,
                    batch=batch,
                    train=train,
                    notes={"config": os.path.relpath(path), "weights": "random"},
                )
            )
    if len({c.group for c in cases}) != len(devices):
        raise ValueError(
            f"configs {list(configs)} differ in SOLVER.IMS_PER_BATCH or INPUT.MIN_SIZE_TRAIN; "
            "the suite times them side by side on one batch."
        )
    return cases
