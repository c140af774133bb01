"""ONNX export (PyTorch's TorchScript-based exporter over Detectron2's ``TracingAdapter``)
and an ONNX Runtime session to run the result.

Why not Detectron2's ``STABLE_ONNX_OPSET_VERSION`` (11): Mask R-CNN pools with
``ROIAlign(aligned=True)`` (``ROIAlignV2``), and ONNX's ``RoiAlign`` can only express the
half-pixel alignment from opset 16 on; at opset 11 torchvision's symbolic falls back to the
unaligned op and the exported model keeps different boxes (measured here: 57 instead of 62
detections on a DSB2018 image). The default is therefore opset 17, and an opset below 16 is
refused for models that hold an aligned RoIAlign.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``; deprecated but working in
PyTorch 2.14), the one that ``TracingAdapter`` is made for: it exports the traced graph with
its data-dependent sizes (proposals after NMS, detections per image) and dynamic input height
and width. The ``torch.export``-based exporter (``dynamo=True``, PyTorch's default since 2.9)
needs the ``onnxscript`` package and was not tried on Detectron2's R-CNN here.
"""

import io
import re
from typing import Callable, List, Tuple

import numpy as np
import torch
from detectron2.export import TracingAdapter
from torch import nn

from .traceable_model import quiet_tracer_warnings

__all__ = [
    "DEFAULT_ONNX_OPSET",
    "MIN_OPSET_ALIGNED_ROI_ALIGN",
    "OnnxExportError",
    "check_onnx_opset",
    "export_onnx_bytes",
    "load_onnx",
]

DEFAULT_ONNX_OPSET = 17
MIN_OPSET_ALIGNED_ROI_ALIGN = 16
ONNX_INSTALL_HINT = "install the 'export' extra: .venv/bin/pip install -e '.[export]'"


class OnnxExportError(RuntimeError):
    """The model cannot be exported to ONNX here; the message names the operator at fault."""


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"--format onnx needs the 'onnx' package: {ONNX_INSTALL_HINT}") from e
    return onnx


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            f"checking an ONNX export needs the 'onnxruntime' package: {ONNX_INSTALL_HINT}"
        ) from e
    return onnxruntime


def _aligned_roi_align_modules(model: nn.Module) -> List[str]:
    return [
        name
        for name, module in model.named_modules()
        if type(module).__name__ in ("ROIAlign", "RoIAlign") and getattr(module, "aligned", False)
    ]


def check_onnx_opset(model: nn.Module, opset: int) -> None:
    """Raise ``ValueError`` when ``opset`` cannot express an op of ``model`` faithfully."""
    aligned = _aligned_roi_align_modules(model)
    if opset < MIN_OPSET_ALIGNED_ROI_ALIGN and aligned:
        raise ValueError(
            f"--opset {opset}: {aligned[0]} is ROIAlign(aligned=True), which ONNX RoiAlign "
            f"expresses only from opset {MIN_OPSET_ALIGNED_ROI_ALIGN} on (below it the exported "
            f"model pools misaligned and keeps different boxes); use --opset "
            f"{MIN_OPSET_ALIGNED_ROI_ALIGN} or higher (default {DEFAULT_ONNX_OPSET})."
        )


_OPERATOR = re.compile(r"\b((?:aten|prim|torchvision|detectron2|onnx)::[A-Za-z_0-9.]+)")


def export_onnx_bytes(
    adapter: TracingAdapter, image: torch.Tensor, output_names: List[str], opset: int
) -> bytes:
    """
    Export ``adapter`` (traced on one (C, H, W) ``image``) to an ONNX model in memory, with
    input ``image`` of dynamic height and width and the given output names; the model is
    validated by ``onnx.checker``.

    Raises:
        OnnxExportError: naming the operator that has no ONNX translation at ``opset``.
    """
    onnx = _import_onnx()
    check_onnx_opset(adapter.model, opset)
    buffer = io.BytesIO()
    try:
        with quiet_tracer_warnings(), torch.no_grad():
            torch.onnx.export(
                adapter,
                (image,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=output_names,
                dynamic_axes={"image": {1: "height", 2: "width"}},
            )
    except Exception as e:  # the exporter raises several types; all mean "cannot export"
        found = _OPERATOR.search(str(e))
        operator = found.group(1) if found else "an operator it could not name"
        raise OnnxExportError(
            f"ONNX export (opset {opset}) of {type(adapter.model).__name__} failed at "
            f"{operator}: {type(e).__name__}: {e}. TorchScript export (--format torchscript) "
            f"does not depend on ONNX translations."
        ) from e
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def load_onnx(data: bytes, device) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """
    An ONNX Runtime session over serialized ONNX: CUDA when ``device`` is CUDA and this
    onnxruntime has the CUDA provider, else the CPU.

    Returns:
        ``run(image)``: (C, H, W) tensor -> tuple of CPU output tensors.
    """
    ort = _import_onnxruntime()
    providers = ["CPUExecutionProvider"]
    if (
        torch.device(device).type == "cuda"
        and "CUDAExecutionProvider" in ort.get_available_providers()
    ):
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(data, providers=providers)
    input_name = session.get_inputs()[0].name

    def run(image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = session.run(None, {input_name: image.detach().cpu().numpy().astype(np.float32)})
        return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)

    return run
