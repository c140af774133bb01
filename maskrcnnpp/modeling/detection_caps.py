"""
Test-time caps of Mask R-CNN(++) that follow the area of the image.

Detectron2 keeps, per image, at most ``MODEL.RPN.PRE_NMS_TOPK_TEST`` proposals per pyramid
level before the RPN's NMS, ``MODEL.RPN.POST_NMS_TOPK_TEST`` after it and
``TEST.DETECTIONS_PER_IMAGE`` detections, whatever the image's size: a large or dense image
silently loses the nuclei beyond the caps. :func:`scale_caps_with_area` makes each cap, for
every forward pass, ``max(KEY, ceil(KEY_PER_MEGAPIXEL * megapixels))`` of the largest image of
the batch as the model sees it (after ``INPUT.SCALE_FACTOR_TEST``; the predictor passes one
image or tile at a time), the fixed keys being the floors; and it names, in each image's
output (``output["caps_reached"]``, a list of one-line strings), the caps that image reached
all the same, so that evaluation and ``tools/predict.py`` can say so. A cap counts as reached
when it kept its full count and the last item it kept was still likely a nucleus (objectness
probability or score >= :data:`LIKELY`): what a cap drops ranks below what it kept, so
otherwise only unlikely background went (the RPN fills its post-NMS cap with background boxes
on most images). A reached pre-NMS cap is not reported: it keeps the best anchors of each level
out of tens of thousands on every image.

A traced or exported model keeps the caps it was traced with (the floors); see
:func:`export_caps`.
"""

import math
from typing import Dict, List

from torch import nn

__all__ = ["AREA_SCALED_CAPS", "LIKELY", "export_caps", "scale_caps_with_area"]

# The fixed cap's key -> the key of its per-megapixel rate (maskrcnnpp/config/defaults.py).
AREA_SCALED_CAPS = {
    "MODEL.RPN.PRE_NMS_TOPK_TEST": "MODEL.RPN.PRE_NMS_TOPK_TEST_PER_MEGAPIXEL",
    "MODEL.RPN.POST_NMS_TOPK_TEST": "MODEL.RPN.POST_NMS_TOPK_TEST_PER_MEGAPIXEL",
    "TEST.DETECTIONS_PER_IMAGE": "TEST.DETECTIONS_PER_MEGAPIXEL",
}
# A full cap is reported when the last proposal it kept has objectness probability, or the
# last detection score, >= this (the default score thresholds of evaluation and prediction).
LIKELY = 0.5


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


class _AreaScaledCaps:
    """The hooks' shared state: the floors and rates, the caps of the current forward pass and
    what each image of it reached."""

    def __init__(self, cfg):
        self.floor = {key: int(_value(cfg, key)) for key in AREA_SCALED_CAPS}
        self.rate = {
            key: float(_value(cfg, rate_key)) for key, rate_key in AREA_SCALED_CAPS.items()
        }
        for key, rate_key in AREA_SCALED_CAPS.items():
            if self.rate[key] < 0:
                raise ValueError(f"{rate_key} must be >= 0; got {self.rate[key]}")
        self.megapixels = 0.0
        self.reached: Dict[int, List[str]] = {}

    def cap(self, key) -> int:
        return max(self.floor[key], math.ceil(self.rate[key] * self.megapixels))

    def describe(self, key, what) -> str:
        return (
            f"reached the cap of {self.cap(key)} {what} ({key} {self.floor[key]}, "
            f"{AREA_SCALED_CAPS[key]} {self.rate[key]:g} x {self.megapixels:.2f} megapixels of "
            "model input): nuclei may be missing; raise these keys"
        )

    # forward pre-hooks: set the caps from the batch's largest image
    def before_rpn(self, rpn, args):
        if rpn.training:
            return
        images = args[0]
        self.megapixels = max((h * w for h, w in images.image_sizes), default=0) / 1e6
        self.reached = {}
        rpn.pre_nms_topk[False] = self.cap("MODEL.RPN.PRE_NMS_TOPK_TEST")
        rpn.post_nms_topk[False] = self.cap("MODEL.RPN.POST_NMS_TOPK_TEST")

    def before_roi_heads(self, roi_heads, args):
        if not roi_heads.training:
            roi_heads.box_predictor.test_topk_per_image = self.cap("TEST.DETECTIONS_PER_IMAGE")

    # forward hooks: record the caps reached, then hand them to the outputs
    def after_rpn(self, rpn, args, output):
        if not rpn.training:
            self._record(
                output[0],
                "MODEL.RPN.POST_NMS_TOPK_TEST",
                "proposals",
                lambda p: p.objectness_logits.sigmoid(),
            )

    def after_roi_heads(self, roi_heads, args, output):
        if not roi_heads.training:
            self._record(output[0], "TEST.DETECTIONS_PER_IMAGE", "detections", lambda d: d.scores)

    def _record(self, per_image, key, what, likelihood):
        for index, instances in enumerate(per_image):
            if len(instances) >= self.cap(key) and float(likelihood(instances).min()) >= LIKELY:
                self.reached.setdefault(index, []).append(self.describe(key, what))

    def after_model(self, model, args, outputs):
        if model.training or not isinstance(outputs, list):
            return
        for index, output in enumerate(outputs):
            if isinstance(output, dict):
                output["caps_reached"] = self.reached.get(index, [])
        self.reached = {}


def scale_caps_with_area(model: nn.Module, cfg) -> nn.Module:
    """
    Make the test-time caps of ``model`` (a Detectron2 ``GeneralizedRCNN``: an RPN
    ``proposal_generator`` and ``roi_heads`` with a ``box_predictor``) follow the image's area
    as the module docstring says, from the keys of :data:`AREA_SCALED_CAPS` in ``cfg``. Other
    models (semantic ones, or a second call) are left as they are.

    Returns:
        ``model``, with forward hooks; its outputs in eval mode get ``"caps_reached"``.
    """
    rpn = getattr(model, "proposal_generator", None)
    roi_heads = getattr(model, "roi_heads", None)
    if (
        getattr(model, "_area_scaled_caps", None) is not None
        or not hasattr(rpn, "post_nms_topk")
        or not hasattr(getattr(roi_heads, "box_predictor", None), "test_topk_per_image")
    ):
        return model
    caps = _AreaScaledCaps(cfg)
    rpn.register_forward_pre_hook(caps.before_rpn)
    rpn.register_forward_hook(caps.after_rpn)
    roi_heads.register_forward_pre_hook(caps.before_roi_heads)
    roi_heads.register_forward_hook(caps.after_roi_heads)
    model.register_forward_hook(caps.after_model)
    model._area_scaled_caps = caps
    return model


def export_caps(cfg) -> Dict[str, int]:
    """The caps an exported (traced) model of ``cfg`` keeps for every image, whatever its size:
    the fixed keys of :data:`AREA_SCALED_CAPS` (the per-megapixel rates need the hooks of
    :func:`scale_caps_with_area`, which a traced graph does not run)."""
    return {key: int(_value(cfg, key)) for key in AREA_SCALED_CAPS}
