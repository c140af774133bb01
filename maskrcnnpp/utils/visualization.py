"""Pictures of nuclei: label images drawn over their image, and image | truth | prediction
panels (the evaluator's worst images, predict's overlays)."""

import cv2
import numpy as np

__all__ = ["draw_labels", "draw_side_by_side"]


def _label_colours(num_labels):
    """
    Returns:
        ndarray: (num_labels + 1, 3) uint8 RGB colours, row 0 black; hues spread by the golden
        ratio so that neighbouring labels differ.
    """
    hues = (np.arange(num_labels + 1) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], axis=1)
    colours = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    colours[0] = 0
    return colours


def draw_labels(image, labels, fill_alpha=0.35):
    """
    Draw nuclei on an image.

    Args:
        image (ndarray): (H, W, 3) uint8 RGB.
        labels (ndarray): (H, W) integer label image, 0 background.
        fill_alpha (float): opacity of the nuclei's fill; outlines are opaque.

    Returns:
        ndarray: (H, W, 3) uint8 RGB.
    """
    labels = labels.astype(np.int64)
    colours = _label_colours(int(labels.max(initial=0)))[labels]
    inside = labels > 0
    out = image.astype(np.float32)
    out[inside] = (1 - fill_alpha) * out[inside] + fill_alpha * colours[inside]
    # Outline: a labelled pixel with a 4-neighbour of another label (or the image border).
    padded = np.pad(labels, 1, mode="constant", constant_values=-1)
    center = padded[1:-1, 1:-1]
    edge = inside & (
        (padded[:-2, 1:-1] != center)
        | (padded[2:, 1:-1] != center)
        | (padded[1:-1, :-2] != center)
        | (padded[1:-1, 2:] != center)
    )
    out[edge] = colours[edge]
    return out.astype(np.uint8)


def draw_side_by_side(image, gt_labels, pred_labels, title=""):
    """
    Args:
        image (ndarray): (H, W, 3) uint8 RGB.
        gt_labels, pred_labels (ndarray): (H, W) label images.
        title (str): written in a bar above the panels.

    Returns:
        ndarray: (H + T, 3 * W + 8, 3) uint8 RGB, a text bar of height T above the three
        panels image | ground truth | prediction.
    """
    height, width = gt_labels.shape
    gap, line = 4, 18
    bar = 2 * line + 4 if title else line + 4
    canvas = np.full((height + bar, 3 * width + 2 * gap, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if title:
        cv2.putText(canvas, title, (3, line - 5), font, 0.45, (160, 0, 0), 1, cv2.LINE_AA)
    panels = (image, draw_labels(image, gt_labels), draw_labels(image, pred_labels))
    captions = ("image", "ground truth", "prediction")
    for column, (panel, caption) in enumerate(zip(panels, captions)):
        x0 = column * (width + gap)
        canvas[bar:, x0 : x0 + width] = panel
        cv2.putText(canvas, caption, (x0 + 3, bar - 6), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
