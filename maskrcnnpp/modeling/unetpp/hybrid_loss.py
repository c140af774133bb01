"""
The hybrid loss of UNet++ (docs/design.md section 7): pixel-wise cross-entropy plus (1 - soft Dice).
"""

import torch
import torch.nn.functional as F

__all__ = ["hybrid_loss", "segmentation_probabilities"]


def segmentation_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """
    Class probabilities from head logits.

    Args:
        logits (Tensor): (N, K, H, W); K = 1 is a binary head (sigmoid of the foreground,
            class 1), K >= 2 a multi-class head (softmax over K classes).

    Returns:
        Tensor: (N, C, H, W) probabilities summing to 1 over C, with C = 2 for a binary head
        (background, foreground) and C = K otherwise.
    """
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits)
        return torch.cat([1.0 - foreground, foreground], dim=1)
    return F.softmax(logits, dim=1)


def hybrid_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_value: int,
    ce_weight: float,
    eps: float = 1e-6,
) -> torch.Tensor:
    """
    ``L = ce_weight * CE(Y, P) + (1 - Dice(Y, P))`` with
    ``Dice = mean_c 2 sum_n y_nc p_nc / (sum_n y_nc + sum_n p_nc + eps)``, the sums running
    over the valid (not ``ignore_value``) pixels n of the whole batch.

    A binary head (K = 1) uses binary cross-entropy on the foreground logit and the Dice of
    the foreground class only (c = 1), as the paper does; a multi-class head (K >= 2) uses
    softmax cross-entropy and the Dice averaged over its K classes. CE is the mean over valid
    pixels, so L lies in [0, inf); a batch with no valid pixel gives 0 (with gradients).

    Args:
        logits (Tensor): (N, K, H, W) head output.
        targets (Tensor): (N, H, W) integer class per pixel, in [0, max(K, 2)) or
            ``ignore_value``.
        ignore_value (int): target value of pixels that do not count.
        ce_weight (float): weight of the cross-entropy term (the paper: 0.5).
        eps (float): keeps the Dice ratio finite when a class is absent from both Y and P.

    Returns:
        Tensor: scalar loss.
    """
    if logits.dim() != 4 or targets.shape != (logits.shape[0],) + logits.shape[2:]:
        raise ValueError(
            f"hybrid_loss: logits (N, K, H, W) and targets (N, H, W) must agree, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}."
        )
    # float32 sums over the batch's pixels, also when the network runs under a bfloat16
    # autocast (SOLVER.AMP.ENABLED on the CPU)
    logits = logits.float()
    valid = targets != ignore_value
    if not bool(valid.any()):
        return logits.sum() * 0.0
    num_classes = max(logits.shape[1], 2)
    bad = valid & ((targets < 0) | (targets >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"hybrid_loss: target value {int(targets[bad][0])} is neither a class in "
            f"0..{num_classes - 1} nor the ignore value {ignore_value}."
        )
    valid_f = valid.unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
    if logits.shape[1] == 1:
        y = (targets == 1).unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
        ce = F.binary_cross_entropy_with_logits(logits, y, weight=valid_f, reduction="sum")
        p = torch.sigmoid(logits)
    else:
        safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
        ce = (F.cross_entropy(logits, safe_targets, reduction="none") * valid_f[:, 0]).sum()
        p = F.softmax(logits, dim=1)
        y = F.one_hot(safe_targets, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    ce = ce / valid_f.sum()
    p = p * valid_f
    y = y * valid_f
    dims = (0, 2, 3)
    dice_per_class = 2.0 * (y * p).sum(dims) / (y.sum(dims) + p.sum(dims) + eps)
    return ce_weight * ce + (1.0 - dice_per_class.mean())
