"""
Folding of frozen normalization layers into the convolutions they follow, for inference.

A Detectron2 :class:`Conv2d` applies ``activation(norm(conv(x)))``. When ``norm`` is an affine
map fixed at inference -- :class:`FrozenBatchNorm2d`, or a :class:`torch.nn.BatchNorm2d`
(SyncBN and NaiveSyncBatchNorm included) in eval mode with running statistics -- it equals
``y = conv(x) * s + t`` per output channel, with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean * s``; folding sets ``W' = W * s``, ``b' = b * s + t`` and drops the norm,
which removes one pass over every such conv's output. GroupNorm / LayerNorm depend on the
input and are left alone.
"""

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

__all__ = ["fold_conv_norms", "foldable_norm"]


def foldable_norm(norm) -> bool:
    """Whether ``norm`` is a fixed per-channel affine map at inference."""
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (
        isinstance(norm, nn.modules.batchnorm._BatchNorm)
        and not norm.training
        and norm.track_running_stats
        and norm.running_mean is not None
    )


@torch.no_grad()
def fold_conv_norms(module: nn.Module) -> int:
    """
    Fold every foldable norm of the Detectron2 :class:`Conv2d` layers in ``module`` into the
    conv, in place. Call it on a model in eval mode, for inference only (the folded model has
    no norm left to train). Outputs stay equal up to float rounding.

    Returns:
        int: how many norms were folded.

    Raises:
        ValueError: ``module`` is in training mode (its BatchNorms would use batch statistics).
    """
    if module.training:
        raise ValueError(
            "fold_conv_norms: call model.eval() first; a BatchNorm in training mode normalizes "
            "with batch statistics, which cannot be folded."
        )
    folded = 0
    for conv in module.modules():
        if not isinstance(conv, Conv2d) or not foldable_norm(conv.norm):
            continue
        norm = conv.norm
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        scale = weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = bias - norm.running_mean * scale
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.clone())
        else:
            conv.bias.mul_(scale).add_(shift)
        conv.norm = None
        folded += 1
    return folded
