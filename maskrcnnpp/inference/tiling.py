"""Overlapping square tiles over a large image, and the rule that decides which tile keeps a
nucleus.

Along each axis of length ``L`` the tiles have size ``T`` and overlap at least ``O``: ``n =
ceil((L - O) / (T - O))`` tiles whose starts are spread evenly from ``0`` to ``L - T`` (an
axis with ``L <= T`` has one tile ``[0, L)``). Each tile owns a *core*: the half-open
interval from the middle of its overlap with the previous tile to the middle of its overlap
with the next one (``0`` and ``L`` at the image borders). The cores partition the image, and
a 2-D tile's core is the product of its two axis cores.

Keep rule (used for instance models): a tile keeps a detection iff the centre of the
detection's box lies in the tile's core. If every nucleus is smaller than the overlap (a
diameter ``D <= O - 1`` pixels), then

* a nucleus whose centre lies in a tile's core lies whole inside that tile, so the tile
  that keeps it saw all of it (never cut);
* a neighbouring tile that sees the same nucleus cut by its border sees a part whose box
  centre lies outside its own core, so it drops it (never doubled);
* exactly one tile's core holds the centre of a whole detection, so each nucleus is kept
  once, when the tiles that see it whole predict it alike. A real model predicts it a little
  differently in each; for a nucleus centred near a core boundary both centres may then fall
  in their own tile's core, and :mod:`maskrcnnpp.inference.tile_duplicates` removes such
  pairs by mask IoU.

Semantic models do not need the keep rule: each pixel's class probabilities come from the
tile whose core holds the pixel (away from tile borders, where context is missing), and
nuclei are the connected components of the stitched map.
"""

from dataclasses import dataclass
from typing import List, Tuple

__all__ = ["Tile", "tile_axis", "tile_image"]


@dataclass(frozen=True)
class Tile:
    """One tile: its extent and its core, in pixels of the full image, ends exclusive."""

    y0: int
    x0: int
    y1: int
    x1: int
    core_y0: int
    core_x0: int
    core_y1: int
    core_x1: int

    def core_holds_box_centre(self, y0, x0, y1, x1):
        """
        Args:
            y0, x0, y1, x1 (int): a box in full-image pixels, ends exclusive.

        Returns:
            bool: whether the box centre ``((y0 + y1) / 2, (x0 + x1) / 2)`` lies in the core
            (compared in doubled integer coordinates, so no rounding decides it).
        """
        return (
            2 * self.core_y0 <= y0 + y1 < 2 * self.core_y1
            and 2 * self.core_x0 <= x0 + x1 < 2 * self.core_x1
        )


def tile_axis(length: int, tile_size: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """
    Args:
        length (int): image size along the axis, >= 1.
        tile_size (int): tile size T >= 1.
        overlap (int): minimum overlap O, 0 <= O < T.

    Returns:
        list[(start, end, core_start, core_end)]: the tiles along the axis in increasing
        order; ``end - start == min(T, length)``; neighbouring tiles overlap by >= O pixels;
        the cores ``[core_start, core_end)`` partition ``[0, length)``.
    """
    if tile_size < 1:
        raise ValueError(f"tile size must be >= 1 pixel; got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"tile overlap must be in [0, tile size {tile_size}); got {overlap}")
    if length <= tile_size:
        return [(0, length, 0, length)]
    stride = tile_size - overlap
    num_tiles = -(-(length - overlap) // stride)  # ceil
    span = length - tile_size
    # start_i = round(i * span / (n - 1)), rounding half up in integers: consecutive starts
    # differ by at most ceil(span / (n - 1)) <= stride, so overlaps stay >= O.
    starts = [(2 * i * span + num_tiles - 1) // (2 * (num_tiles - 1)) for i in range(num_tiles)]
    ends = [s + tile_size for s in starts]
    # Core boundary between tiles i and i + 1: the middle of their overlap, rounded down.
    boundaries = [0] + [(starts[i + 1] + ends[i]) // 2 for i in range(num_tiles - 1)] + [length]
    return [(starts[i], ends[i], boundaries[i], boundaries[i + 1]) for i in range(num_tiles)]


def tile_image(height: int, width: int, tile_size: int, overlap: int) -> List[Tile]:
    """
    Args:
        height, width (int): image size.
        tile_size, overlap (int): as :func:`tile_axis`.

    Returns:
        list[Tile]: row-major tiles covering the image; their cores partition it.
    """
    rows = tile_axis(height, tile_size, overlap)
    columns = tile_axis(width, tile_size, overlap)
    return [
        Tile(y0, x0, y1, x1, cy0, cx0, cy1, cx1)
        for (y0, y1, cy0, cy1) in rows
        for (x0, x1, cx0, cx1) in columns
    ]
