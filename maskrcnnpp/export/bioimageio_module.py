"""
The module a bioimage.io package runs: one (1, 3, H, W) RGB image in, one (1, 1, H, W) map out,
post-processing included, as TorchScript.

The model itself is traced (``torchscript_export.trace_torchscript`` of the
``TracingAdapter``, as ``--format torchscript``); around it a scripted wrapper does what
``tools/predict.py`` does outside the model:

* semantic models (UNet++, U-Net): the per-pixel nucleus probability ``1 - p(background)``;
* instance models (Mask R-CNN, Mask R-CNN++): the resize by ``INPUT.SCALE_FACTOR_TEST``, the
  score threshold ``TEST.PREDICT.SCORE_THRESH``, the masks pasted into the image at its own
  size and painted into an int32 label image as
  :func:`maskrcnnpp.structures.instance_painting.paint_instances` paints them (overlaps go to
  the higher score, labels 1..K by decreasing score, instances left without a pixel dropped).
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling import GeneralizedRCNN
from torch import nn

from ..data.pixel_scale import scale_factor_at_test
from .torchscript_export import trace_torchscript
from .traceable_model import build_traceable_model, flattened_output_names, quiet_tracer_warnings

__all__ = [
    "NucleusProbabilityMap",
    "NucleusLabelImage",
    "build_package_modules",
    "paint_label_image",
]

# The R-CNN core's flat outputs, in TracingAdapter's order (checked when the module is built).
_RCNN_OUTPUTS = (
    "instances.pred_boxes",
    "instances.pred_classes",
    "instances.pred_masks",
    "instances.scores",
    "instances.image_size",
)


def paint_label_image(masks: torch.Tensor) -> torch.Tensor:
    """
    Compiled into the scripted wrapper (TorchScript keeps the loop, tracing would unroll it).

    Args:
        masks: (N, H, W) bool (or 0/1) instance masks, ordered by decreasing score.

    Returns:
        (H, W) int32 label image: 0 background, 1..K in mask order; a pixel covered by
        several masks goes to the first; masks left without a pixel get no label.
    """
    labels = torch.zeros(masks.shape[1:], dtype=torch.int32, device=masks.device)
    next_label = 1
    for index in range(masks.shape[0]):
        free = (masks[index] != 0) & (labels == 0)
        if bool(free.any()):
            labels.masked_fill_(free, next_label)
            next_label += 1
    return labels


def _first_image(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) -> (3, H, W), refusing anything else with a message naming the shape."""
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected a (1, 3, H, W) RGB image tensor; got {list(x.shape)}")
    return x[0].float()


class NucleusProbabilityMap(nn.Module):
    """(1, 3, H, W) RGB image, 0..255 -> (1, 1, H, W) float32 nucleus probability."""

    def __init__(self, core: nn.Module, *, bgr: bool):
        """
        Args:
            core: the semantic model's ``TracingAdapter`` (eager) or its traced TorchScript:
                (3, H, W) image in the model's channel order -> ((K, H, W) class
                probabilities,), class 0 the background.
            bgr: the model expects BGR (``INPUT.FORMAT``).
        """
        super().__init__()
        self.core = core
        self.bgr = bgr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = _first_image(x)
        if self.bgr:
            image = image.flip(0)
        probabilities = self.core(image)[0]
        return (1.0 - probabilities[0])[None, None]


class NucleusLabelImage(nn.Module):
    """(1, 3, H, W) RGB image, 0..255 -> (1, 1, H, W) int32 nuclei label image."""

    def __init__(
        self,
        core: nn.Module,
        *,
        bgr: bool,
        scale_factor: float,
        score_threshold: float,
        mask_threshold: float = 0.5,
    ):
        """
        Args:
            core: the R-CNN's ``TracingAdapter`` (eager) or its traced TorchScript: (3, h, w)
                image -> (boxes (R, 4) in input pixels, classes (R,), mask probabilities
                (R, 1, M, M), scores (R,), image size (2,)), before ``detector_postprocess``.
            bgr: the model expects BGR (``INPUT.FORMAT``).
            scale_factor: ``INPUT.SCALE_FACTOR_TEST``; the image is resized by it (bilinear,
                rounded to 0..255 integers) before the model, the masks pasted at the image's
                own size.
            score_threshold: ``TEST.PREDICT.SCORE_THRESH``: detections scored lower are dropped.
            mask_threshold: mask probability at which a pixel belongs to the nucleus.
        """
        super().__init__()
        self.core = core
        self.bgr = bgr
        self.scale_factor = float(scale_factor)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)

    def _resized(
        self, image: torch.Tensor, height: int, width: int
    ) -> Tuple[torch.Tensor, int, int]:
        # as maskrcnnpp.data.pixel_scale.scaled_size: rounded, at least 1 pixel
        new_height = max(1, int(round(height * self.scale_factor)))
        new_width = max(1, int(round(width * self.scale_factor)))
        if new_height == height and new_width == width:
            return image, height, width
        resized = F.interpolate(
            image[None],
            size=[new_height, new_width],
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]
        return resized.round().clamp(0.0, 255.0), new_height, new_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = _first_image(x)
        height, width = int(image.shape[1]), int(image.shape[2])
        if self.bgr:
            image = image.flip(0)
        image, input_height, input_width = self._resized(image, height, width)
        outputs = self.core(image)
        boxes, masks, scores = outputs[0], outputs[2], outputs[3]
        keep = scores >= self.score_threshold
        boxes, masks, scores = boxes[keep], masks[keep], scores[keep]
        # detector_postprocess: boxes scaled to the image, clipped, empty ones dropped
        scale = torch.tensor(
            [
                width / input_width,
                height / input_height,
                width / input_width,
                height / input_height,
            ],
            dtype=boxes.dtype,
            device=boxes.device,
        )
        boxes = boxes * scale
        boxes = torch.stack(
            [
                boxes[:, 0].clamp(0.0, float(width)),
                boxes[:, 1].clamp(0.0, float(height)),
                boxes[:, 2].clamp(0.0, float(width)),
                boxes[:, 3].clamp(0.0, float(height)),
            ],
            dim=1,
        )
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, masks, scores = boxes[nonempty], masks[nonempty], scores[nonempty]
        order = torch.argsort(scores, descending=True, stable=True)
        if int(order.numel()) == 0:
            return torch.zeros([1, 1, height, width], dtype=torch.int32, device=x.device)
        pasted = paste_masks_in_image(
            masks[order][:, 0], boxes[order], (height, width), self.mask_threshold
        )
        return paint_label_image(pasted)[None, None]


def build_package_modules(
    cfg, model: nn.Module, image: torch.Tensor
) -> Tuple[nn.Module, torch.jit.ScriptModule]:
    """
    Args:
        cfg: the model's config (``INPUT.FORMAT``; instance models: ``INPUT.SCALE_FACTOR_TEST``,
            ``TEST.PREDICT.SCORE_THRESH``).
        model: built from ``cfg``, weights loaded, in eval mode.
        image: (3, H, W) float image, 0..255, in the model's channel order and at its input
            scale, on which the model is traced.

    Returns:
        ``(eager, scripted)``: the same wrapper (:class:`NucleusLabelImage` for
        ``GeneralizedRCNN``, else :class:`NucleusProbabilityMap`) around the eager model and
        around the traced one, scripted: (1, 3, H, W) RGB image -> (1, 1, H, W) map.
    """
    if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
        raise ValueError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r}: bioimage.io export supports 'BGR' and 'RGB' models"
        )
    adapter = build_traceable_model(model, image)
    names = tuple(flattened_output_names(adapter))
    traced = trace_torchscript(adapter, image)
    bgr = cfg.INPUT.FORMAT == "BGR"
    if isinstance(model, GeneralizedRCNN):
        if names != _RCNN_OUTPUTS:
            raise ValueError(
                f"the R-CNN's outputs are {list(names)}; a label image needs {list(_RCNN_OUTPUTS)}"
            )
        options = {
            "bgr": bgr,
            "scale_factor": scale_factor_at_test(cfg),
            "score_threshold": cfg.TEST.PREDICT.SCORE_THRESH,
        }
        eager, wrapper = NucleusLabelImage(adapter, **options), NucleusLabelImage(traced, **options)
    else:
        if names != ("sem_seg",):
            raise ValueError(
                f"the semantic model's outputs are {list(names)}; a probability map needs ['sem_seg']"
            )
        eager, wrapper = (
            NucleusProbabilityMap(adapter, bgr=bgr),
            NucleusProbabilityMap(traced, bgr=bgr),
        )
    with quiet_tracer_warnings():
        scripted = torch.jit.script(wrapper.eval())
    return eager.eval(), scripted
