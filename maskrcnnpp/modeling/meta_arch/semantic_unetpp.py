"""
Semantic UNet++ (docs/design.md section 6) as a Detectron2 meta-architecture: any registered
encoder, a U-Net / UNet+ / UNet++ decoder, deep supervision with the hybrid loss, and
inference from the ensemble of heads or from a pruned sub-network.
"""

import logging
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, Backbone
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from torch import nn

from ...structures.interior_boundary import BACKGROUND, nuclei_from_interior_boundary
from ..model_kind import SEMANTIC
from ..unetpp.hybrid_loss import hybrid_loss, segmentation_probabilities
from ..unetpp.nested_decoder import NestedDecoder
from ..unetpp.sliding_window import sliding_window_predict

__all__ = ["SemanticUNetPlusPlus"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class SemanticUNetPlusPlus(nn.Module):
    """
    Encoder ``X(i, 0)`` (the encoder's ``in_features``, strides doubling from level to level),
    :class:`NestedDecoder`, and 1x1 conv heads on top-row nodes ``X(0, j)``.

    Heads: with deep supervision, one per top-row node ``X(0, 1..D)`` (D = L - 1 decoder
    columns; UNet+ and UNet++ only); without, one on ``X(0, D)``. A head predicts one logit
    (binary: sigmoid foreground) when ``num_classes == 2``, else ``num_classes`` logits
    (softmax). Head ``j`` is the submodule ``heads.x_0_{j}``.

    Training: the loss of head j is ``loss_weights[j] * hybrid_loss`` at the input's
    resolution (logits up-sampled bilinearly when the top row's stride is above 1).

    Inference (``test_level``): 0 averages the probabilities of all heads (the ensemble;
    the single head without deep supervision); k in 1..D runs only the sub-network that feeds
    ``X(0, k)`` -- encoder levels 0..k and decoder nodes with i + j <= k -- and returns head
    k. Images with a side above ``sliding_window_size`` are predicted window by window.
    With ``test_dihedral_mean`` the probabilities are averaged over the image's 8 flips and
    90-degree rotations.

    Target (``target``): "semantic" learns the dataset's labels; "interior_boundary" learns
    background / nucleus interior / nucleus boundary (3 classes, made from instance masks by
    the data mapper) and inference returns, besides ``"sem_seg"`` (background, nucleus),
    ``"instances"``: the interiors grown into the foreground
    (:func:`~maskrcnnpp.structures.interior_boundary.nuclei_from_interior_boundary`), so touching
    nuclei come out apart.

    Pruning skips the deeper encoder levels for encoders with ``forward_up_to`` (VGG,
    ResNetEncoder) and for Detectron2's ResNet; any other encoder still runs whole (the
    decoder is pruned all the same), which a warning says once.
    """

    # a semantic model (maskrcnnpp/modeling/model_kind.py): sem_seg inputs, own pixel scale
    model_kind = SEMANTIC

    @configurable
    def __init__(
        self,
        *,
        encoder: Backbone,
        in_features: Sequence[str],
        decoder_channels: Sequence[int],
        skip: str,
        norm: str,
        num_classes: int,
        target: str = "semantic",
        deep_supervision: bool,
        loss_weights: Sequence[float],
        ce_weight: float,
        ignore_value: int,
        test_level: int,
        sliding_window_size: int,
        sliding_window_overlap: float,
        test_dihedral_mean: bool = False,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            encoder (Backbone): produces ``in_features``.
            in_features (list[str]): encoder outputs ``X(0..L-1, 0)``, finest first, each
                stride twice the previous one.
            decoder_channels (list[int]): channels of the decoder nodes of levels 0..L-2;
                empty: the encoder's channels at each level (the paper's U-Net / UNet++).
            skip (str): "unet", "unet+" or "unet++".
            norm (str): normalization in the decoder nodes, a :func:`get_norm` name.
            num_classes (int): classes including the background (class 0); 2 is binary.
            target (str): "semantic" or "interior_boundary" (needs ``num_classes`` 3).
            deep_supervision (bool): a head on every top-row node (else on the last only).
            loss_weights (list[float]): one weight per head, in column order; empty: all 1.
            ce_weight (float): weight of the cross-entropy term of the hybrid loss.
            ignore_value (int): target value of pixels without a label.
            test_level (int): 0 (ensemble of heads) or k in 1..L-1 (pruned at level k).
            sliding_window_size (int): images with a side above this are predicted in
                windows of this size (0: never).
            sliding_window_overlap (float): fraction of a window shared with its neighbour.
            test_dihedral_mean (bool): inference averages the probabilities of the image's 8
                flips and 90-degree rotations, each mapped back to the image.
            pixel_mean, pixel_std (list[float]): input normalization, one value per channel.
        """
        super().__init__()
        shapes = encoder.output_shape()
        missing = [name for name in in_features if name not in shapes]
        if missing or len(in_features) < 2:
            raise ValueError(
                f"MODEL.UNETPP.IN_FEATURES {list(in_features)}: need >= 2 outputs of the encoder "
                f"{type(encoder).__name__}, which produces {sorted(shapes)}."
            )
        strides = [shapes[name].stride for name in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(
                f"MODEL.UNETPP.IN_FEATURES {list(in_features)} have strides {strides}; each must "
                f"be twice the previous one."
            )
        in_channels = [shapes[name].channels for name in in_features]
        num_levels = len(in_features)
        depth = num_levels - 1
        if not decoder_channels:
            decoder_channels = in_channels[:depth]
        if len(decoder_channels) != depth:
            raise ValueError(
                f"MODEL.UNETPP.DECODER_CHANNELS {list(decoder_channels)}: need {depth} entries "
                f"(levels 0..{depth - 1}) for IN_FEATURES {list(in_features)}, or none."
            )
        if sliding_window_size < 0 or not 0.0 <= sliding_window_overlap < 1.0:
            raise ValueError(
                f"MODEL.UNETPP.SLIDING_WINDOW_SIZE {sliding_window_size} must be >= 0 and "
                f"MODEL.UNETPP.SLIDING_WINDOW_OVERLAP {sliding_window_overlap} in [0, 1)."
            )
        if num_classes < 2:
            raise ValueError(
                f"MODEL.UNETPP.NUM_CLASSES must be >= 2 (with background), got {num_classes}."
            )
        if target not in ("semantic", "interior_boundary"):
            raise ValueError(
                f"MODEL.UNETPP.TARGET {target!r}: choose 'semantic' or 'interior_boundary'."
            )
        if target == "interior_boundary" and num_classes != 3:
            raise ValueError(
                f"MODEL.UNETPP.TARGET 'interior_boundary' has 3 classes (background, interior, "
                f"boundary): set MODEL.UNETPP.NUM_CLASSES 3, not {num_classes}."
            )
        self.target = target
        self.encoder = encoder
        self.in_features = list(in_features)
        self.decoder = NestedDecoder(
            in_channels=in_channels, channels=decoder_channels, skip=skip, norm=norm
        )
        if deep_supervision and skip == "unet":
            raise ValueError(
                "MODEL.UNETPP.DEEP_SUPERVISION needs top-row nodes X(0, 1..L-2), which the "
                "'unet' skip design does not have; use SKIP 'unet+' or 'unet++', or turn it off."
            )
        self.head_columns = list(range(1, depth + 1)) if deep_supervision else [depth]
        if loss_weights and len(loss_weights) != len(self.head_columns):
            raise ValueError(
                f"MODEL.UNETPP.LOSS_WEIGHTS {list(loss_weights)}: need one weight per head "
                f"(columns {self.head_columns}), or none."
            )
        self.loss_weights = list(loss_weights) or [1.0] * len(self.head_columns)
        head_outputs = 1 if num_classes == 2 else num_classes
        self.heads = nn.ModuleDict(
            {
                f"x_0_{j}": nn.Conv2d(self.decoder.out_channels, head_outputs, 1)
                for j in self.head_columns
            }
        )
        self.num_classes = num_classes
        self.ce_weight = ce_weight
        self.ignore_value = ignore_value
        self.top_row_stride = strides[0]
        self.size_divisibility = strides[-1]
        self.test_level = test_level
        self.sliding_window_size = sliding_window_size
        self.sliding_window_overlap = sliding_window_overlap
        self.test_dihedral_mean = test_dihedral_mean
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.UNETPP
        # setup_cfg has checked that c.ENCODER is registered (config/checks.py)
        encoder = BACKBONE_REGISTRY.get(c.ENCODER)(
            cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
        )
        return {
            "encoder": encoder,
            "in_features": list(c.IN_FEATURES),
            "decoder_channels": list(c.DECODER_CHANNELS),
            "skip": c.SKIP,
            "norm": c.NORM,
            "num_classes": c.NUM_CLASSES,
            "target": c.TARGET,
            "deep_supervision": c.DEEP_SUPERVISION,
            "loss_weights": list(c.LOSS_WEIGHTS),
            "ce_weight": c.CE_WEIGHT,
            "ignore_value": c.IGNORE_VALUE,
            "test_level": c.TEST_LEVEL,
            "sliding_window_size": c.SLIDING_WINDOW_SIZE,
            "sliding_window_overlap": c.SLIDING_WINDOW_OVERLAP,
            "test_dihedral_mean": c.TEST_DIHEDRAL_MEAN,
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
        }

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def test_level(self) -> int:
        return self._test_level

    @test_level.setter
    def test_level(self, level: int):
        """0 (ensemble) or k in 1..D with a head on X(0, k); checked here so that a bad
        MODEL.UNETPP.TEST_LEVEL fails when the model is built, not after training."""
        if level != 0 and level not in self.head_columns:
            raise ValueError(
                f"MODEL.UNETPP.TEST_LEVEL {level}: this model has heads on columns "
                f"{self.head_columns}; use 0 (ensemble) or one of them."
            )
        self._test_level = level

    # ------------------------------------------------------------------------------------
    def head_logits(
        self, images: torch.Tensor, depth: Optional[int] = None
    ) -> Dict[int, torch.Tensor]:
        """
        Args:
            images (Tensor): normalized (N, C, H, W), H and W divisible by
                :attr:`size_divisibility`.
            depth (int): run the sub-network of ``X(0, depth)`` only (encoder levels
                0..depth); default: the whole network.

        Returns:
            dict[int -> Tensor]: column j -> head logits (N, K, H, W), for each head with
            j <= depth.
        """
        depth = depth or len(self.in_features) - 1
        features = self._encoder_features(images, depth)
        top_row = self.decoder(features, depth)
        logits = {}
        for j in self.head_columns:
            if j <= depth:
                out = self.heads[f"x_0_{j}"](top_row[j])
                if self.top_row_stride != 1:
                    out = F.interpolate(
                        out, size=images.shape[-2:], mode="bilinear", align_corners=False
                    )
                logits[j] = out
        return logits

    def _encoder_features(self, images: torch.Tensor, depth: int) -> List[torch.Tensor]:
        """The encoder maps of levels 0..depth; encoders with ``forward_up_to`` (VGG,
        ResNetEncoder) and Detectron2's ResNet stop after level ``depth``."""
        names = self.in_features[: depth + 1]
        if hasattr(self.encoder, "forward_up_to"):
            features = self.encoder.forward_up_to(images, names[-1])
        elif isinstance(self.encoder, ResNet):
            from ..backbone.staged_encoder import resnet_stages, run_stages_up_to

            features = run_stages_up_to(images, resnet_stages(self.encoder), names, names[-1])
        else:
            if depth < len(self.in_features) - 1 and not getattr(
                self, "_warned_full_encoder", False
            ):
                logger.warning(
                    f"{type(self.encoder).__name__} has no forward_up_to: the pruned model runs "
                    f"its whole encoder (only the decoder is pruned)."
                )
                self._warned_full_encoder = True
            features = self.encoder(images)
        return [features[name] for name in names]

    def normalize_image(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W) image in the input format, 0..255 -> float32 on the model's device,
        minus ``pixel_mean``, divided by ``pixel_std``: what every method taking a
        "normalized" image expects."""
        return (image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std

    def _pad(self, tensors: List[torch.Tensor], pad_value: float) -> ImageList:
        return ImageList.from_tensors(tensors, self.size_divisibility, pad_value=pad_value)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): per image, "image" (C, H, W) in the model's input
                format; in training also "sem_seg" (H, W) long targets; optionally "height",
                "width" (the output size, default the input size).

        Returns:
            Training: dict of losses ``"loss_sem_seg_x_0_{j}"``, one per head.
            Inference: list[dict], per image ``{"sem_seg": (C, height, width)}`` class
            probabilities (C = num_classes; class 0 the background); with the
            "interior_boundary" target, ``"sem_seg"`` is (2, height, width) background /
            nucleus (interior + boundary) and ``"instances"`` holds the nuclei
            (``pred_masks`` (N, height, width) bool, ``scores``, ``pred_classes``,
            ``pred_boxes``).
        """
        if self.training:
            return self._losses(batched_inputs)
        return [self._predict_one(x) for x in batched_inputs]

    def _losses(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        if any("sem_seg" not in x for x in batched_inputs):
            raise ValueError("SemanticUNetPlusPlus needs 'sem_seg' targets in training inputs.")
        images = self._pad([self.normalize_image(x["image"]) for x in batched_inputs], 0.0)
        targets = self._pad(
            [x["sem_seg"].to(self.device) for x in batched_inputs], self.ignore_value
        ).tensor.long()
        logits = self.head_logits(images.tensor)
        return {
            f"loss_sem_seg_x_0_{j}": weight
            * hybrid_loss(
                logits[j], targets, ignore_value=self.ignore_value, ce_weight=self.ce_weight
            )
            for j, weight in zip(self.head_columns, self.loss_weights)
        }

    def head_probabilities(self, image: torch.Tensor, depth: Optional[int] = None) -> torch.Tensor:
        """
        Class probabilities of every head of the (sub-)network, from one forward pass per
        window.

        Args:
            image (Tensor): one normalized image (C_in, H, W), any H, W >= 1; images with a
                side above :attr:`sliding_window_size` are predicted window by window.
            depth (int): as in :meth:`head_logits`; default: the whole network.

        Returns:
            Tensor: (K, C, H, W), K the heads on columns <= depth, in column order.
        """
        if self.sliding_window_size and max(image.shape[-2:]) > self.sliding_window_size:
            num_heads = len(
                [j for j in self.head_columns if j <= (depth or len(self.in_features) - 1)]
            )
            flat = sliding_window_predict(
                image,
                lambda crop: self._whole_image_head_probabilities(crop, depth).flatten(0, 1),
                window=self.sliding_window_size,
                overlap=self.sliding_window_overlap,
            )
            return flat.view(num_heads, -1, *flat.shape[-2:])
        return self._whole_image_head_probabilities(image, depth)

    def _whole_image_head_probabilities(
        self, image: torch.Tensor, depth: Optional[int]
    ) -> torch.Tensor:
        height, width = image.shape[-2:]
        padded = self._pad([image], 0.0).tensor
        logits = self.head_logits(padded, depth).values()
        # float32 probabilities also under a bfloat16 autocast (TEST.PRECISION)
        probs = torch.stack([segmentation_probabilities(x.float())[0] for x in logits])
        return probs[:, :, :height, :width]

    def predict_probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image (Tensor): one normalized image (C_in, H, W), any H, W >= 1.

        Returns:
            Tensor: (C, H, W) class probabilities from the heads chosen by :attr:`test_level`:
            the mean of all heads (0) or head k of the sub-network pruned at level k; with
            :attr:`test_dihedral_mean`, their mean over the image's 8 flips and 90-degree
            rotations, each mapped back to the image.
        """
        if self.test_dihedral_mean:
            return self.dihedral_mean(self._chosen_heads_probabilities, image)
        return self._chosen_heads_probabilities(image)

    @staticmethod
    def dihedral_mean(
        predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            predict: maps an image (C_in, H, W) to a map (..., H, W) at its size, e.g.
                :meth:`head_probabilities`.
            image (Tensor): (C_in, H, W).

        Returns:
            Tensor: (..., H, W), the mean of ``predict`` over the image's 8 flips and 90-degree
            rotations, each output mapped back to the image.
        """
        # the 8 views as transpose or not, then flips of rows and / or columns (the same set as
        # 4 rotations x 2 flips; transposes and flips export to ONNX, rot90 does not); each is
        # its own inverse, undone in reverse order
        total = None
        for transpose in (False, True):
            for flip_dims in ((), (-2,), (-1,), (-2, -1)):
                view = image.transpose(-2, -1) if transpose else image
                view = view.flip(flip_dims) if flip_dims else view
                out = predict(view)
                out = out.flip(flip_dims) if flip_dims else out
                out = out.transpose(-2, -1) if transpose else out
                total = out if total is None else total + out
        return total / 8

    def _chosen_heads_probabilities(self, image: torch.Tensor) -> torch.Tensor:
        if self.test_level == 0:
            return self.head_probabilities(image).mean(0)
        return self.head_probabilities(image, self.test_level)[-1]

    def _predict_one(self, inputs: Dict) -> Dict[str, torch.Tensor]:
        image = self.normalize_image(inputs["image"])
        height, width = image.shape[-2:]
        probs = self.predict_probabilities(image)
        return self.postprocess(probs, inputs.get("height", height), inputs.get("width", width))

    def postprocess(self, probs: torch.Tensor, height: int, width: int) -> Dict[str, torch.Tensor]:
        """
        The model's output for one image from class probabilities.

        Args:
            probs (Tensor): (C, h, w) class probabilities at the input image's size (e.g. from
                :meth:`predict_probabilities` or one head of :meth:`head_probabilities`).
            height, width (int): the output size (the original image's); probabilities are
                resized bilinearly when it differs from (h, w).

        Returns:
            dict: ``{"sem_seg": (C, height, width)}``; with the "interior_boundary" target,
            ``"sem_seg"`` (2, height, width) background / nucleus and ``"instances"``
            (:meth:`nuclei_instances`).
        """
        probs = sem_seg_postprocess(probs, tuple(probs.shape[-2:]), height, width)
        if self.target == "semantic":
            return {"sem_seg": probs}
        return {
            "sem_seg": torch.stack([probs[BACKGROUND], 1.0 - probs[BACKGROUND]]),
            "instances": self.nuclei_instances(probs),
        }

    @staticmethod
    def nuclei_instances(probs: torch.Tensor) -> Instances:
        """
        Args:
            probs (Tensor): (3, H, W) background / interior / boundary probabilities.

        Returns:
            Instances: the nuclei of
            :func:`~maskrcnnpp.structures.interior_boundary.nuclei_from_interior_boundary`, on
            ``probs``'s device: ``pred_masks`` (N, H, W) bool, ``scores`` (N,),
            ``pred_classes`` (N,) zeros, ``pred_boxes``.
        """
        labels, scores = nuclei_from_interior_boundary(probs.detach().float().cpu().numpy())
        labels = torch.from_numpy(labels).to(probs.device)
        num = len(scores)
        ids = torch.arange(1, num + 1, device=probs.device).view(-1, 1, 1)
        instances = Instances(tuple(probs.shape[-2:]))
        instances.pred_masks = labels.unsqueeze(0) == ids
        instances.scores = torch.as_tensor(scores, dtype=torch.float32, device=probs.device)
        instances.pred_classes = torch.zeros(num, dtype=torch.int64, device=probs.device)
        instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
        return instances
