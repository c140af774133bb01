"""TorchScript export by tracing (``torch.jit.trace`` of Detectron2's ``TracingAdapter``)."""

import io
from typing import Callable, Tuple

import torch
from detectron2.export import TracingAdapter

from .traceable_model import quiet_tracer_warnings

__all__ = ["trace_torchscript", "torchscript_bytes", "load_torchscript"]


def trace_torchscript(adapter: TracingAdapter, image: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace ``adapter`` on one (C, H, W) image. The traced module takes a (C, H, W) float
    tensor of any size and returns the adapter's flat tuple of tensors."""
    with quiet_tracer_warnings(), torch.no_grad():
        return torch.jit.trace(adapter, (image,), check_trace=False)


def torchscript_bytes(module: torch.jit.ScriptModule) -> bytes:
    """``torch.jit.save`` into memory (the caller writes the bytes atomically)."""
    buffer = io.BytesIO()
    with quiet_tracer_warnings():
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def load_torchscript(data: bytes, device) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """
    Load serialized TorchScript the way a user would (``torch.jit.load``), onto ``device``.

    Returns:
        ``run(image)``: (C, H, W) tensor -> tuple of output tensors.
    """
    with quiet_tracer_warnings():
        module = torch.jit.load(io.BytesIO(data), map_location=torch.device(device))
    module.eval()

    def run(image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.no_grad():
            outputs = module(image.to(device))
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    return run
