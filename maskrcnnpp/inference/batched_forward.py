"""
One model call for several same-size images whose outputs equal, bit for bit, those of one
call per image.

* Mask R-CNN / Mask R-CNN++ (Detectron2's ``GeneralizedRCNN``): the backbone (bottom-up +
  (nested) FPN, the bulk of the image-level work) runs once on the batch; the RPN, the RoI
  heads and the mask pasting then run image by image on that image's slice of the features,
  exactly as for the image alone (batching RoIs of several images changes the RoI heads'
  batch sizes, hence their kernels and sums, and the pasted masks of a whole batch would sit
  in memory together).
* Semantic UNet++ (:class:`~maskrcnnpp.modeling.meta_arch.SemanticUNetPlusPlus`): its
  inference batches same-size images itself.
* Any other model: one call per image.

The batched part runs inside
:func:`~maskrcnnpp.inference.batch_invariant_conv.single_image_convolutions`, so that
PyTorch's choice of convolution kernel by batch size does not change a number.
"""

from typing import Dict, Iterator, List

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import ImageList

from ..modeling.meta_arch.semantic_unetpp import SemanticUNetPlusPlus
from .batch_invariant_conv import single_image_convolutions

__all__ = ["batched_outputs"]


def batched_outputs(model: torch.nn.Module, inputs: List[Dict]) -> Iterator[Dict]:
    """
    Args:
        model: a Detectron2 model in eval mode.
        inputs (list[dict]): ``{"image": (3, h, w) float, "height", "width"}`` per image, all
            images of the same (h, w).

    Yields:
        dict: ``model([x])[0]`` for each ``x`` of ``inputs``, in order; an instance model's
        next output is computed only when the previous one has been taken.
    """
    if len(inputs) == 1:
        yield model(inputs)[0]
    elif isinstance(model, GeneralizedRCNN) and model.proposal_generator is not None:
        yield from _rcnn_outputs(model, inputs)
    elif isinstance(model, SemanticUNetPlusPlus):
        with single_image_convolutions():
            outputs = model(inputs)
        yield from outputs
    else:
        for x in inputs:
            yield model([x])[0]


def _rcnn_outputs(model: GeneralizedRCNN, inputs: List[Dict]) -> Iterator[Dict]:
    """The backbone on the batch, then everything after it image by image."""
    images = model.preprocess_image(inputs)  # (N, 3, H, W), every image padded alike
    with single_image_convolutions():
        features = model.backbone(images.tensor)  # name -> (N, C, H_l, W_l)
    for i, x in enumerate(inputs):
        image = ImageList(images.tensor[i : i + 1], images.image_sizes[i : i + 1])
        image_features = {name: f[i : i + 1] for name, f in features.items()}
        proposals, _ = model.proposal_generator(image, image_features, None)
        results, _ = model.roi_heads(image, image_features, proposals, None)
        yield GeneralizedRCNN._postprocess(results, [x], image.image_sizes)[0]
