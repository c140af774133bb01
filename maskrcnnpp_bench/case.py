"""
A benchmark case: one model x variant x input x device, and the workload it builds.
"""

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Dict, Mapping, Tuple

import torch
from torch import nn

__all__ = ["BenchmarkCase", "Workload"]


class Workload:
    """
    A built model with its inputs, ready to be timed. Subclasses implement :meth:`infer`,
    :meth:`train_step` and :meth:`gflops`; each must leave ``module`` in eval mode.

    Attributes:
        module (nn.Module): the model, on the case's device, in eval mode.
        notes (dict): facts about the built model that go into its record's notes.
    """

    module: nn.Module
    notes: Mapping[str, object] = MappingProxyType({})  # replaced, never mutated

    def infer(self) -> Dict[str, int]:
        """
        One inference without gradients.

        Returns:
            dict[str -> int]: counts that must be equal across the compared models for the race
            to be fair (e.g. ``{"proposals": 2000, "detections": 500}``), or {}.
        """
        raise NotImplementedError

    def train_step(self) -> None:
        """One training step: forward in train mode, backward, optimizer step."""
        raise NotImplementedError

    def gflops(self) -> float:
        """fvcore's count of one inference, in G multiply-adds."""
        raise NotImplementedError


@dataclass
class BenchmarkCase:
    """
    What to measure: ``build()`` returns a :class:`Workload` for ``model`` / ``variant`` on
    ``batch`` x 3 x ``height`` x ``width`` inputs on ``device``. Cases of one group (same
    suite, input and device) are timed interleaved; the group's first case is the reference
    of the latency ratios.
    """

    suite: str
    model: str
    variant: str
    height: int
    width: int
    device: str
    build: Callable[[], Workload]
    batch: int = 1
    train: bool = True
    notes: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def square(cls, suite: str, model: str, variant: str, size: int, device: str, build, **kwargs):
        """A case on ``size`` x ``size`` inputs; ``kwargs``: the other fields."""
        return cls(suite, model, variant, size, size, device, build, **kwargs)

    @property
    def input_size(self) -> Tuple[int, int]:
        return (self.height, self.width)

    @property
    def name(self) -> str:
        """e.g. "Mask R-CNN++ unet++/sum/separable"."""
        return f"{self.model} {self.variant}".strip()

    @property
    def group(self) -> Tuple[str, int, int, int, str]:
        return (self.suite, self.height, self.width, self.batch, self.device)


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
