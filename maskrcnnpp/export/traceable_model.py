"""A Detectron2 model wrapped for tracing: one image tensor in, a flat tuple of tensors out."""

import contextlib
import warnings
from typing import List, Tuple

import torch
from detectron2.export import TracingAdapter
from detectron2.export.flatten import DictSchema, InstancesSchema, ListSchema, Schema
from detectron2.modeling import GeneralizedRCNN
from torch import nn

__all__ = ["build_traceable_model", "flattened_output_names", "run_eager", "quiet_tracer_warnings"]


def _rcnn_inference_without_postprocess(model: GeneralizedRCNN, inputs):
    """R-CNN inference up to, not including, ``detector_postprocess``: boxes in the
    coordinates of the model's (resized) input and (R, 1, M, M) mask probabilities per box,
    not yet pasted into the image -- the part that traces into a graph."""
    instances = model.inference(inputs, do_postprocess=False)[0]
    return [{"instances": instances}]


def _semantic_class_probabilities(model, inputs):
    """Semantic UNet++: the (C, H, W) class probabilities of every class, before the
    interior / boundary model turns them into nuclei (numpy code, not traceable)."""
    return [
        {"sem_seg": model.predict_probabilities(model.normalize_image(x["image"]))} for x in inputs
    ]


def build_traceable_model(model: nn.Module, image: torch.Tensor) -> TracingAdapter:
    """
    Args:
        model: a Detectron2 meta-architecture in eval mode: ``GeneralizedRCNN`` (Mask R-CNN,
            Mask R-CNN++) or any model taking ``[{"image": (C, H, W)}]`` and returning
            tensors (e.g. ``SemanticUNetPlusPlus``: ``[{"sem_seg": (K, H, W)}]``; with the
            "interior_boundary" target, the 3 class probabilities, without the nuclei).
        image: (C, H, W) sample input on the model's device.

    Returns:
        ``TracingAdapter`` in eval mode whose ``forward(image)`` returns the flat tuple of
        output tensors; it has been run once on ``image``, so its ``outputs_schema`` is set.
    """
    if model.training:
        raise ValueError("export needs the model in eval mode: call model.eval() first")
    if isinstance(model, GeneralizedRCNN):
        inference = _rcnn_inference_without_postprocess
    elif getattr(model, "target", None) == "interior_boundary":
        inference = _semantic_class_probabilities
    else:
        inference = None
    adapter = TracingAdapter(model, [{"image": image}], inference).eval()
    run_eager(adapter, image)
    return adapter


def run_eager(adapter: TracingAdapter, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The eager model's flat outputs for one (C, H, W) image, detached."""
    with torch.no_grad():
        return tuple(t.detach() for t in adapter(image))


def _names(schema: Schema, prefix: str) -> List[str]:
    if isinstance(schema, DictSchema):  # InstancesSchema too: its fields, then image_size
        names = []
        for key, child in zip(schema.keys, schema.schemas):
            names += _names(child, f"{prefix}{key}.")
        if isinstance(schema, InstancesSchema):
            names.append(f"{prefix}image_size")
        return names
    if isinstance(schema, ListSchema):
        if len(schema.schemas) == 1:
            return _names(schema.schemas[0], prefix)
        names = []
        for i, child in enumerate(schema.schemas):
            names += _names(child, f"{prefix}{i}.")
        return names
    return [prefix.rstrip(".")]  # a tensor, or a tensor wrapper such as Boxes


def flattened_output_names(adapter: TracingAdapter) -> List[str]:
    """Names of the flat outputs, in order, e.g. ``instances.pred_boxes``,
    ``instances.pred_classes``, ``instances.pred_masks``, ``instances.scores``,
    ``instances.image_size`` for Mask R-CNN, ``sem_seg`` for a semantic model."""
    if adapter.outputs_schema is None:
        raise ValueError("the adapter has not been run yet: its outputs_schema is unknown")
    return _names(adapter.outputs_schema, "")


@contextlib.contextmanager
def quiet_tracer_warnings():
    """Hide ``torch.jit.TracerWarning`` (Detectron2 models raise dozens about Python values
    becoming constants) and PyTorch 2.14's deprecation notices of ``torch.jit`` and of the
    TorchScript-based ONNX exporter (both still work); the output check
    on several images is what shows whether the traced graph generalises."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated.*")
        yield
