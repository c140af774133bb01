"""
Sliding-window inference: a dense predictor run on overlapping windows of a large image, the
windows' outputs averaged where they overlap.
"""

import math
from typing import Callable, List

import torch

__all__ = ["window_starts", "sliding_window_predict"]


def window_starts(length: int, window: int, overlap: float) -> List[int]:
    """
    Start offsets of windows of size ``window`` covering ``[0, length)`` with at least
    ``overlap * window`` pixels shared by neighbours; the first window starts at 0, the last
    ends at ``length`` and the others are spread evenly in between.

    Returns:
        list[int]: ``[0]`` when ``length <= window``.
    """
    if window < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"window must be >= 1 and overlap in [0, 1), got {window}, {overlap}.")
    if length <= window:
        return [0]
    max_step = max(1, int(window * (1.0 - overlap)))
    num = 1 + math.ceil((length - window) / max_step)
    return [round(k * (length - window) / (num - 1)) for k in range(num)]


def sliding_window_predict(
    image: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    *,
    window: int,
    overlap: float,
) -> torch.Tensor:
    """
    Args:
        image (Tensor): (C_in, H, W).
        predict (callable): maps a crop (C_in, h, w) to an output (C_out, h, w), h, w <= window.
        window (int): side of the square windows.
        overlap (float): fraction of a window shared with its neighbour, in [0, 1).

    Returns:
        Tensor: (C_out, H, W), every pixel the mean of the outputs of the windows covering it.
    """
    height, width = image.shape[-2:]
    total = None
    count = torch.zeros((1, height, width), dtype=torch.float32, device=image.device)
    for y in window_starts(height, window, overlap):
        for x in window_starts(width, window, overlap):
            out = predict(image[:, y : y + window, x : x + window])
            if total is None:
                total = torch.zeros(
                    (out.shape[0], height, width), dtype=out.dtype, device=out.device
                )
            total[:, y : y + window, x : x + window] += out
            count[:, y : y + window, x : x + window] += 1
    return total / count.to(total.dtype)
