"""
Convolutions of a batch that give, bit for bit, what each image alone would give.

PyTorch chooses the CPU convolution kernel of a float32 input by its shape
(``ConvParams::use_mkldnn`` in ATen): a batch of one image whose input is small
(at most ``SMALL_INPUT_ELEMENTS`` elements, no grouped or larger-than-3x3 kernel), or a
single-threaded unstrided 1x1 convolution, runs the native im2col + GEMM kernel, while a
batch of several images runs oneDNN. The two sum in different orders and differ by ~1e-6,
enough to move a detection's score or a mask pixel at its threshold. Inside
:func:`single_image_convolutions`, a float32 CPU convolution of a batch that the single image
would send to the native kernel is computed image by image (it costs nothing: the native
kernel loops over the images anyway); every other convolution runs on the whole batch, as
oneDNN computes each image of a batch as it does alone.
"""

import contextlib

import torch
import torch.nn.functional as F

__all__ = ["SMALL_INPUT_ELEMENTS", "single_image_convolutions"]

# ATen sends a one-image float32 input with at most this many elements (C * H * W) to the
# native kernel unless the convolution is grouped or its kernel is larger than 3x3 both ways.
SMALL_INPUT_ELEMENTS = 20480


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _single_image_takes_native_kernel(x, weight, stride, dilation, groups) -> bool:
    """Whether ATen runs one image of ``x`` ((N, C, H, W) float32 on the CPU) through the
    native kernel rather than oneDNN."""
    if not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled:
        return True
    kernel_h, kernel_w = weight.shape[-2:]
    strided = any(s != 1 for s in _pair(stride))
    dilated = any(d != 1 for d in _pair(dilation))
    one_by_one = kernel_h == 1 and kernel_w == 1
    may_use_onednn = strided or dilated or not one_by_one or torch.get_num_threads() > 1
    onednn_pays = groups > 1 or (kernel_h > 3 and kernel_w > 3) or x[0].numel() > SMALL_INPUT_ELEMENTS
    return not (may_use_onednn and onednn_pays)


def _splits_batch(x, weight, stride, dilation, groups) -> bool:
    return (
        x.dim() == 4
        and x.shape[0] > 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.layout == torch.strided
        and not torch.is_autocast_enabled("cpu")  # autocast's bfloat16 always takes oneDNN
        and _single_image_takes_native_kernel(x, weight, stride, dilation, groups)
    )


@contextlib.contextmanager
def single_image_convolutions():
    """
    Within the block, ``F.conv2d`` and ``F.conv_transpose2d`` of an (N, C, H, W) batch return
    exactly the (N, C', H', W') concatenation of their one-image results. Not thread-safe: it
    replaces the two functions of ``torch.nn.functional`` (what ``nn.Conv2d``, Detectron2's
    ``Conv2d`` and ``nn.ConvTranspose2d`` call) for the whole process while it is entered.
    """
    conv2d, conv_transpose2d = F.conv2d, F.conv_transpose2d

    def batch_invariant_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if _splits_batch(x, weight, stride, dilation, groups):
            return torch.cat([conv2d(x[i : i + 1], weight, bias, stride, padding, dilation, groups)
                              for i in range(x.shape[0])])  # fmt: skip
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    def batch_invariant_conv_transpose2d(
        x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        args = (weight, bias, stride, padding, output_padding, groups, dilation)
        if _splits_batch(x, weight, stride, dilation, groups):
            return torch.cat([conv_transpose2d(x[i : i + 1], *args) for i in range(x.shape[0])])
        return conv_transpose2d(x, *args)

    F.conv2d, F.conv_transpose2d = batch_invariant_conv2d, batch_invariant_conv_transpose2d
    try:
        yield
    finally:
        F.conv2d, F.conv_transpose2d = conv2d, conv_transpose2d
