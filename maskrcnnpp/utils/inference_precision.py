"""
The number format of inference (``TEST.PRECISION``): ``"float32"``, or ``"bfloat16"`` through
``torch.autocast`` (convolutions and matrix products in bfloat16, numerically sensitive ops and
every output the tools read in float32).

bfloat16 keeps float32's exponent range and 8 bits of mantissa: on CPUs with AVX512-BF16 or
AMX, and on CUDA GPUs from Ampere on, the UNet++ forward pass runs about twice as fast; the
class probabilities move by a few thousandths (docs/benchmark.md gives the measured speed and
differences, tests/test_inference_precision.py the tolerance).
"""
import contextlib

import torch

__all__ = ["INFERENCE_PRECISIONS", "check_inference_precision", "inference_autocast"]

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


def inference_autocast(precision: str, device: torch.device):
    """
    Args:
        precision (str): a ``TEST.PRECISION`` value.
        device (torch.device or str): where the model runs.

    Returns:
        a context manager: ``torch.autocast`` to the precision's dtype on ``device``'s type, or
        a no-op for "float32".
    """
    dtype = INFERENCE_PRECISIONS[check_inference_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
