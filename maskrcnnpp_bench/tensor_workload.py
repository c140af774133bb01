"""
The workload of a module that maps one image batch tensor to a tensor or a dict of tensors
(a backbone, a segmentation network).
"""

from typing import Callable, Dict, Optional

import torch
from torch import nn

from .case import Workload
from .flops import count_gflops

__all__ = ["TensorWorkload", "mean_square_loss"]


def mean_square_loss(outputs) -> torch.Tensor:
    """A stand-in training loss that reaches every output: the mean square of each, summed."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    elif isinstance(outputs, dict):
        outputs = list(outputs.values())
    return sum(o.float().square().mean() for o in outputs)


class TensorWorkload(Workload):
    """
    ``module(images)`` for inference; for training, ``loss_fn(module(images))`` (by default
    :func:`mean_square_loss`, or ``train_loss(module)`` when given: e.g. a model whose training
    forward returns its own losses), backward and one SGD step.
    """

    def __init__(
        self,
        module: nn.Module,
        images: torch.Tensor,
        *,
        train_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None,
        lr: float = 1e-4,
    ):
        """
        Args:
            module: on the device of ``images``.
            images: (N, C, H, W) input batch.
            train_loss: computes the training loss of ``module`` (in train mode).
        """
        self.module = module.eval()
        self.images = images
        self._train_loss = train_loss or (lambda m: mean_square_loss(m(self.images)))
        self._optimizer = torch.optim.SGD(
            [p for p in module.parameters() if p.requires_grad], lr=lr, momentum=0.9
        )

    def infer(self) -> Dict[str, int]:
        with torch.inference_mode():
            self.module(self.images)
        return {}

    def train_step(self) -> None:
        self.module.train()
        try:
            loss = self._train_loss(self.module)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
        finally:
            self.module.eval()

    def gflops(self) -> float:
        return count_gflops(self.module, (self.images,))
