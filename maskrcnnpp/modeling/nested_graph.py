"""
The skip pathways of a nested (UNet++-style) decoder, as a graph of nodes ``X(i, j)``.

Level ``i`` = 0 .. L-1 runs from the finest to the coarsest input feature (stride doubles
from one level to the next); column ``j`` counts the nodes along a level. ``X(i, 0)`` are
the encoder / lateral nodes. Every other node ``X(i, j)`` fuses some nodes of its own level
with the 2x up-sampled node ``X(i+1, j-1)`` of the level below, and the decoder's output at
level ``i`` is its deepest node ``X(i, L-1-i)``. The three skip designs differ only in which
nodes exist and which same-level nodes feed each one:

- ``"top_down"``: the top-down chain only (U-Net's decoder; FPN's wiring, but with a node
  conv block at every merge where FPN adds): ``X(i, L-1-i) = H(X(i, 0), U(X(i+1, L-2-i)))``;
  no intermediate nodes. ``"fpn"`` is an old name of it, accepted with a warning.
- ``"unet+"``: every node with i + j <= L-1, fed by its left neighbour:
  ``X(i, j) = H(X(i, j-1), U(X(i+1, j-1)))``.
- ``"unet++"``: every node with i + j <= L-1, fed densely by all nodes on its left:
  ``X(i, j) = H(X(i, 0), ..., X(i, j-1), U(X(i+1, j-1)))``.

Only the wiring lives here; the modules that compute the nodes are elsewhere
(:class:`NestedNode`).
"""

import warnings
from typing import Dict, NamedTuple, Tuple

__all__ = [
    "SKIP_DESIGNS",
    "NodeInputs",
    "canonical_skip_design",
    "nested_node_inputs",
    "output_node",
]

SKIP_DESIGNS = ("top_down", "unet+", "unet++")

_OLD_SKIP_NAMES = {"fpn": "top_down"}


def canonical_skip_design(skip: str) -> str:
    """``skip``, or the current name of an old one (``"fpn"`` -> ``"top_down"``, with a
    warning: the design is not FPN, it has a conv block at every merge)."""
    if skip in _OLD_SKIP_NAMES:
        new = _OLD_SKIP_NAMES[skip]
        warnings.warn(
            f"skip design {skip!r} is now called {new!r} (it is not FPN: every merge has a conv "
            f"block); use MODEL.NESTED_FPN.SKIP {new!r}.",
            FutureWarning,
            stacklevel=3,
        )
        return new
    return skip


Node = Tuple[int, int]


class NodeInputs(NamedTuple):
    """
    The inputs of one node ``X(i, j)``, j >= 1, in the order the node fuses them.
    """

    same_level: Tuple[Node, ...]
    """nodes ``X(i, k)`` of the node's own level, k ascending"""
    below: Node
    """the node ``X(i+1, j-1)``, which enters up-sampled 2x"""


def output_node(level: int, num_levels: int) -> Node:
    """
    The node whose feature map is the decoder's output at ``level``: ``X(level, L-1-level)``.
    """
    return (level, num_levels - 1 - level)


def nested_node_inputs(num_levels: int, skip: str) -> Dict[Node, NodeInputs]:
    """
    Args:
        num_levels (int): L, the number of encoder levels (nodes ``X(0..L-1, 0)``).
        skip (str): one of :data:`SKIP_DESIGNS`.

    Returns:
        dict[(i, j) -> NodeInputs]: every node with j >= 1 that the design has, mapped to its
        inputs. Iteration order is a valid computation order (column by column, j ascending,
        then i ascending), so every node comes after the nodes that feed it. A node is the
        ``below`` input of one node at most (``X(i+1, j-1)`` feeds ``X(i, j)`` only).
    """
    skip = canonical_skip_design(skip)
    if skip not in SKIP_DESIGNS:
        raise ValueError(f"Unknown skip design {skip!r}; expected one of {SKIP_DESIGNS}.")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}.")
    graph = {}
    for j in range(1, num_levels):
        for i in range(num_levels - j):
            below = (i + 1, j - 1)
            if skip == "unet++":
                graph[(i, j)] = NodeInputs(tuple((i, k) for k in range(j)), below)
            elif skip == "unet+":
                graph[(i, j)] = NodeInputs(((i, j - 1),), below)
            elif (i, j) == output_node(i, num_levels):  # "top_down": the chain only
                graph[(i, j)] = NodeInputs(((i, 0),), below)
    return graph
