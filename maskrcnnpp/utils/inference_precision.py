"""
The number format of inference (``TEST.PRECISION``): ``"float32"``, or ``"bfloat16"`` through
``torch.autocast`` (convolutions and matrix products in bfloat16, numerically sensitive ops in
float32), the model's outputs converted back to float32 in one place, :func:`inference_autocast`,
so that every consumer (the predictor, the evaluators, ``.numpy()``) reads float32.

bfloat16 keeps float32's exponent range and 8 bits of mantissa: on CPUs with AVX512-BF16 or
AMX, and on CUDA GPUs from Ampere on, the UNet++ forward pass runs about twice as fast; the
class probabilities move by a few thousandths (docs/benchmark.md gives the measured speed and
differences, tests/engine/test_semantic_training.py the tolerance).
"""

import contextlib

import torch
from detectron2.structures import Instances

__all__ = ["INFERENCE_PRECISIONS", "as_float32", "check_inference_precision", "inference_autocast"]

# TEST.PRECISION value -> the autocast dtype (None: no autocast)
INFERENCE_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def check_inference_precision(precision: str) -> str:
    """Returns ``precision`` if it is a ``TEST.PRECISION`` value; raises ValueError naming the
    key and the accepted values otherwise."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(
            f"TEST.PRECISION {precision!r}: expected one of {', '.join(map(repr, INFERENCE_PRECISIONS))}"
        )
    return precision


def inference_autocast(precision: str, model: torch.nn.Module):
    """
    Args:
        precision (str): a ``TEST.PRECISION`` value.
        model (nn.Module): the model that runs inside the context; its device (that of its
            first parameter, the CPU for a parameter-free model) picks the autocast device.

    Returns:
        a context manager: a no-op for "float32"; else ``torch.autocast`` to the precision's
        dtype, with ``model``'s outputs converted to float32 (a forward hook, removed on exit;
        Detectron2's instance scores, for one, come out of autocast in bfloat16).
    """
    dtype = INFERENCE_PRECISIONS[check_inference_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return _autocast_with_float32_outputs(model, dtype)


@contextlib.contextmanager
def _autocast_with_float32_outputs(model, dtype):
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    hook = model.register_forward_hook(lambda module, inputs, outputs: as_float32(outputs))
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    finally:
        hook.remove()


def as_float32(value):
    """``value`` with every floating-point tensor in it float32: tensors, lists, tuples, dicts,
    Detectron2 ``Instances`` (field by field) and box or mask structures holding a
    ``.tensor``; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return (
            value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
        )
    if isinstance(value, dict):
        return type(value)((key, as_float32(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(as_float32(item) for item in value)
    if isinstance(value, Instances):
        for name, field in value.get_fields().items():
            value.set(name, as_float32(field))
        return value
    tensor = getattr(value, "tensor", None)
    if (
        isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and tensor.dtype != torch.float32
    ):
        return type(value)(tensor.float())  # Boxes, RotatedBoxes
    return value
