"""Predict the nuclei of one image of any size, whole or tile by tile, with an instance model
(Mask R-CNN / Mask R-CNN++: ``{"instances": Instances}``) or a semantic one (UNet++ family:
``{"sem_seg": (C, H, W)}``), as one label image."""

import contextlib
import logging
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

from ..checkpoint.checkpointer import load_model_weights
from ..data.pixel_scale import build_instance_augmentations
from ..modeling.detection_caps import scale_caps_with_area
from ..modeling.model_kind import is_semantic_model
from ..structures.instance_painting import crop_masks, paint_instances
from ..structures.label_image import semantic_to_label_image
from ..utils.inference_precision import check_inference_precision, inference_autocast
from .tile_duplicates import suppress_cross_tile_duplicates
from .tiling import Tile, tile_image

__all__ = ["NucleiPrediction", "NucleiPredictor"]

logger = logging.getLogger(__name__)


@dataclass
class NucleiPrediction:
    """The nuclei of one image.

    Attributes:
        labels (ndarray): (H, W) int32 label image, 0 background, nuclei 1..K numbered by
            decreasing score (instance models) or in raster order (semantic models).
        scores (ndarray): (K,) float64, ``scores[k - 1]`` the score of nucleus ``k``.
        num_tiles (int): 1 when the image was predicted whole.
        caps_reached (list[str]): the detection caps that the image or one of its tiles
            reached (:mod:`maskrcnnpp.modeling.detection_caps`), one line each; empty when
            none was.
    """

    labels: np.ndarray
    scores: np.ndarray
    num_tiles: int
    caps_reached: List[str] = field(default_factory=list)


def _as_probabilities(sem_seg: torch.Tensor) -> torch.Tensor:
    """(C, H, W) class probabilities as they are, or class logits through a softmax."""
    sem_seg = sem_seg.float()
    tolerance = 1e-3
    is_distribution = (
        sem_seg.min() >= -tolerance
        and sem_seg.max() <= 1 + tolerance
        and (sem_seg.sum(dim=0) - 1).abs().max() <= tolerance
    )
    return sem_seg if is_distribution else sem_seg.softmax(dim=0)


class NucleiPredictor:
    """
    ``NucleiPredictor(cfg)(image)``: the nuclei of an (H, W, 3) uint8 RGB image.

    Images with a side longer than ``max_untiled_size`` are cut into overlapping tiles of
    ``tile_size`` (see :mod:`maskrcnnpp.inference.tiling` for the rule that keeps every nucleus
    once and whole, and :mod:`maskrcnnpp.inference.tile_duplicates` for the pairs a real model
    still predicts twice). Each tile, or the whole image, goes through ``augmentations``
    before the model. From a config these are those of evaluation
    (:func:`maskrcnnpp.data.pixel_scale.build_instance_augmentations`): for instance models a
    resize by the one fixed factor ``INPUT.SCALE_FACTOR_TEST``, whatever the image's or tile's
    size, so that nuclei reach the model at the pixel scale it was trained and evaluated on
    (a 512 tile of a large image and a 256 image alone give the same nuclei; Detectron2's
    per-image ``ResizeShortestEdge`` would shrink the tile twice as much); none for semantic
    models (as in their evaluation).

    * Instance models: detections with score >= ``score_thresh`` and a non-empty mask; where
      masks overlap the higher score keeps the pixel. While the predictor runs the model, its
      box predictors keep only such detections (their ``test_score_thresh`` raised to
      ``score_thresh``, :meth:`run_model`), so the mask head and the mask paste work on the
      nuclei that are kept. The nuclei are the same as with the evaluation's low threshold:
      a detection is suppressed only by one with a higher score, and the cap on detections
      per image takes the highest scores first.
    * Semantic models: the class probabilities are stitched from the tiles' cores; nuclei are
      the 8-connected components of ``argmax != 0`` (for a binary model, ``argmax == 1``),
      each scored by its mean nucleus probability ``1 - p(background)`` (for a binary model,
      the mean of channel 1) and kept if that score >= ``score_thresh``. Outputs that are
      not per-pixel distributions are taken as logits and softmaxed.
    """

    @configurable
    def __init__(
        self,
        *,
        model: torch.nn.Module,
        augmentations,
        input_format: str,
        max_untiled_size: int,
        tile_size: int,
        tile_overlap: int,
        tile_merge_iou: float = 0.5,
        score_thresh: float,
        precision: str = "float32",
    ):
        """
        Args:
            model: a Detectron2 model taking ``[{"image": (3, h, w) float, "height", "width"}]``
                and returning, per image, ``{"instances": Instances}`` with ``pred_masks``
                (N, height, width) bool and ``scores`` (N,), or ``{"sem_seg": (C, height,
                width)}``. Put in eval mode.
            augmentations (list[Augmentation]): test-time transforms applied to each tile
                (or untiled image); the outputs come back at the tile's size.
            input_format (str): "RGB" or "BGR", the channel order the model expects.
            max_untiled_size (int): images with height or width above it are tiled.
            tile_size, tile_overlap (int): tile side and minimum overlap, in pixels.
            tile_merge_iou (float): instance detections kept from different tiles with mask
                IoU >= this are one nucleus (see :mod:`maskrcnnpp.inference.tile_duplicates`).
            score_thresh (float): nuclei with a lower score are dropped.
            precision (str): "float32" or "bfloat16" (the model runs under autocast; see
                :mod:`maskrcnnpp.utils.inference_precision`).
        """
        if input_format not in ("RGB", "BGR"):
            raise ValueError(
                f"INPUT.FORMAT must be 'RGB' or 'BGR' for prediction; got {input_format!r}"
            )
        if max_untiled_size < 0:
            raise ValueError(f"TEST.PREDICT.MAX_UNTILED_SIZE must be >= 0; got {max_untiled_size}")
        if tile_size < 1:
            raise ValueError(f"TEST.PREDICT.TILE_SIZE must be >= 1; got {tile_size}")
        if not 0 <= tile_overlap < tile_size:
            raise ValueError(
                f"TEST.PREDICT.TILE_OVERLAP must be in [0, TEST.PREDICT.TILE_SIZE = {tile_size}); "
                f"got {tile_overlap}"
            )
        self.precision = check_inference_precision(precision)
        self.model = model.eval()
        self.augmentations = T.AugmentationList(list(augmentations))
        self.input_format = input_format
        self.max_untiled_size = max_untiled_size
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.tile_merge_iou = tile_merge_iou
        self.score_thresh = score_thresh

    @classmethod
    def from_config(cls, cfg, model=None):
        """
        Builds the model of ``cfg`` on ``cfg.MODEL.DEVICE`` and loads ``cfg.MODEL.WEIGHTS``
        (every weight; empty is refused) unless ``model`` is given. An
        instance model's test-time caps follow the area of each image or tile
        (:func:`~maskrcnnpp.modeling.detection_caps.scale_caps_with_area`).
        """
        if model is None:
            model = build_model(cfg)
            load_model_weights(model, cfg.MODEL.WEIGHTS)
        scale_caps_with_area(model, cfg)
        semantic = is_semantic_model(cfg)
        return {
            "model": model,
            # As in evaluation (maskrcnnpp.data.build_nuclei_mapper): instance models get the
            # one test factor INPUT.SCALE_FACTOR_TEST for every image and tile, semantic ones
            # the image as it is.
            "augmentations": [] if semantic else build_instance_augmentations(cfg, is_train=False),
            "input_format": cfg.INPUT.FORMAT,
            "max_untiled_size": cfg.TEST.PREDICT.MAX_UNTILED_SIZE,
            "tile_size": cfg.TEST.PREDICT.TILE_SIZE,
            "tile_overlap": cfg.TEST.PREDICT.TILE_OVERLAP,
            "tile_merge_iou": cfg.TEST.PREDICT.TILE_MERGE_IOU,
            "score_thresh": cfg.TEST.PREDICT.SCORE_THRESH,
            "precision": cfg.TEST.PRECISION,
        }

    def tiles(self, height, width):
        """
        Returns:
            list[Tile]: one tile for the whole image when both sides are at most
            ``max_untiled_size``, else the overlapping tile grid.
        """
        if height <= self.max_untiled_size and width <= self.max_untiled_size:
            return [Tile(0, 0, height, width, 0, 0, height, width)]
        return tile_image(height, width, self.tile_size, self.tile_overlap)

    def run_model(self, image: np.ndarray) -> dict:
        """
        Args:
            image (ndarray): (h, w, 3) uint8 RGB.

        Returns:
            dict: the model's output for the image (at size h x w).
        """
        height, width = image.shape[:2]
        if self.input_format == "BGR":
            image = image[:, :, ::-1]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        with (
            torch.no_grad(),
            inference_autocast(self.precision, self.model),
            self._detections_from(self.score_thresh),
        ):
            return self.model([{"image": tensor, "height": height, "width": width}])[0]

    @contextlib.contextmanager
    def _detections_from(self, score_thresh):
        """The model's box predictors keep detections with score >= ``score_thresh`` (or their
        own higher threshold) inside the block, and get their threshold back after it."""
        predictors = [m for m in self.model.modules() if isinstance(m, FastRCNNOutputLayers)]
        saved = [p.test_score_thresh for p in predictors]
        # their filter is score > threshold; the predictor keeps score >= score_thresh
        lowered = float(np.nextafter(np.float32(score_thresh), np.float32(0)))
        try:
            for predictor, threshold in zip(predictors, saved):
                predictor.test_score_thresh = max(threshold, lowered)
            yield
        finally:
            for predictor, threshold in zip(predictors, saved):
                predictor.test_score_thresh = threshold

    def __call__(self, image: np.ndarray) -> NucleiPrediction:
        """
        Args:
            image (ndarray): (H, W, 3) uint8 RGB, any size >= 1x1.

        Returns:
            NucleiPrediction: label image at (H, W), scores, number of tiles.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image; got {image.shape} {image.dtype}"
            )
        height, width = image.shape[:2]
        tiles = self.tiles(height, width)
        instances, tile_ids = [], []  # CroppedMask and its tile's index, from instance models
        caps_reached = []
        nucleus_prob = foreground = None  # (H, W) float32 / bool, from semantic models
        for tile_index, tile in enumerate(tiles):
            output = self.run_model(image[tile.y0 : tile.y1, tile.x0 : tile.x1])
            tile_shape = (tile.y1 - tile.y0, tile.x1 - tile.x0)
            where = f"tile y {tile.y0}:{tile.y1}, x {tile.x0}:{tile.x1}: " if len(tiles) > 1 else ""
            caps_reached.extend(where + reached for reached in output.get("caps_reached", ()))
            if "instances" in output:
                kept = self._kept_instances(output["instances"], tile, tile_shape)
                instances.extend(kept)
                tile_ids.extend([tile_index] * len(kept))
            elif "sem_seg" in output:
                if nucleus_prob is None:
                    nucleus_prob = np.zeros((height, width), np.float32)
                    foreground = np.zeros((height, width), bool)
                self._stitch_core(output["sem_seg"], tile, tile_shape, nucleus_prob, foreground)
            else:
                raise ValueError(
                    f"the model's output has neither 'instances' nor 'sem_seg' (keys: {sorted(output)})"
                )
        if nucleus_prob is not None and instances:
            raise ValueError(
                "the model returned 'instances' for some tiles and 'sem_seg' for others"
            )
        if nucleus_prob is not None:
            labels, scores = self._semantic_instances(nucleus_prob, foreground)
        else:
            instances = suppress_cross_tile_duplicates(instances, tile_ids, self.tile_merge_iou)
            labels, scores = paint_instances(height, width, instances)
        return NucleiPrediction(labels, scores, len(tiles), caps_reached)

    def _kept_instances(self, instances, tile, tile_shape):
        """The tile's detections above the threshold whose box centre lies in its core, as
        CroppedMask in full-image pixels."""
        if not instances.has("pred_masks"):
            raise ValueError("the model's instances have no 'pred_masks': it needs a mask head")
        masks = instances.pred_masks
        if masks.dim() != 3 or tuple(masks.shape[1:]) != tile_shape:
            raise ValueError(
                f"pred_masks of shape {tuple(masks.shape)}; expected (N, {tile_shape[0]}, "
                f"{tile_shape[1]}) masks pasted at the input size"
            )
        keep = instances.scores >= self.score_thresh
        masks = masks[keep]
        masks = (masks if masks.dtype == torch.bool else masks >= 0.5).cpu().numpy()
        crops = crop_masks(masks, instances.scores[keep].cpu().numpy(), tile.y0, tile.x0)
        return [crop for crop in crops if tile.core_holds_box_centre(*crop.box)]

    @staticmethod
    def _stitch_core(sem_seg, tile, tile_shape, nucleus_prob, foreground):
        """Write the tile's core into the full-image nucleus probability and foreground."""
        if sem_seg.dim() != 3 or sem_seg.shape[0] < 2 or tuple(sem_seg.shape[1:]) != tile_shape:
            raise ValueError(
                f"sem_seg of shape {tuple(sem_seg.shape)}; expected (C >= 2, {tile_shape[0]}, "
                f"{tile_shape[1]}) class scores at the input size, class 0 the background"
            )
        probs = _as_probabilities(
            sem_seg[
                :,
                tile.core_y0 - tile.y0 : tile.core_y1 - tile.y0,
                tile.core_x0 - tile.x0 : tile.core_x1 - tile.x0,
            ]
        )
        core = (slice(tile.core_y0, tile.core_y1), slice(tile.core_x0, tile.core_x1))
        nucleus_prob[core] = (1 - probs[0]).cpu().numpy()
        foreground[core] = (probs.argmax(dim=0) != 0).cpu().numpy()

    def _semantic_instances(self, nucleus_prob, foreground):
        """Connected components of the foreground, scored by mean nucleus probability and
        thresholded; returns (labels 1..K in raster order, scores)."""
        components = semantic_to_label_image(foreground)
        num_components = int(components.max(initial=0))
        flat = components.reshape(-1)
        area = np.bincount(flat, minlength=num_components + 1)[1:]
        prob_sum = np.bincount(
            flat, weights=nucleus_prob.reshape(-1), minlength=num_components + 1
        )[1:]
        scores = prob_sum / np.maximum(area, 1)
        keep = scores >= self.score_thresh
        relabel = np.zeros(num_components + 1, np.int32)
        relabel[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        return relabel[components], scores[keep]
