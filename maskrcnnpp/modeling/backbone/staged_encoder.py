"""
Encoders that run stage by stage and can stop early: the one truncation loop that the VGG
encoder, the ResNet U-Net encoder and a pruned semantic UNet++ on Detectron2's ResNet use
(a UNet++ pruned to level L needs no encoder stage deeper than L).
"""

from typing import Callable, Dict, Iterable, List, Sequence, Tuple

from detectron2.modeling.backbone import Backbone, ResNet
from torch import Tensor

__all__ = ["StagedEncoder", "run_stages_up_to", "resnet_stages"]

Stage = Tuple[str, Callable[[Tensor], Tensor]]


def run_stages_up_to(
    x: Tensor, stages: Iterable[Stage], out_features: Sequence[str], last_feature: str
) -> Dict[str, Tensor]:
    """
    Run ``stages`` ((name, function) pairs, each taking the previous stage's output) on ``x``
    in order, keep the outputs named in ``out_features`` and stop after stage
    ``last_feature``: the stages after it are not run.

    Returns:
        dict[str->Tensor]: the outputs of ``out_features`` up to and including ``last_feature``.
    """
    outputs = {}
    for name, stage in stages:
        x = stage(x)
        if name in out_features:
            outputs[name] = x
        if name == last_feature:
            break
    return outputs


def resnet_stages(resnet: ResNet) -> List[Stage]:
    """Detectron2's :class:`ResNet` as stages: "stem", then its "res2".."res5"."""
    return [("stem", resnet.stem), *zip(resnet.stage_names, resnet.stages)]


class StagedEncoder(Backbone):
    """
    A backbone whose :meth:`stages` are run in order; :meth:`forward_up_to` stops after any
    of its outputs. Subclasses set ``_out_features`` (in stage order) and define
    :meth:`stages`.
    """

    def stages(self) -> List[Stage]:
        """The (output name, function) pairs, in order."""
        raise NotImplementedError

    def forward(self, x):
        """
        Args:
            x (Tensor): images of shape (N, C, H, W).

        Returns:
            dict[str->Tensor]: every requested output, name -> (N, channels, H / stride,
            W / stride).
        """
        return self.forward_up_to(x, self._out_features[-1])

    def forward_up_to(self, x, last_feature: str):
        """
        Like :meth:`forward`, but stops after the stage that computes ``last_feature`` (one of
        the requested outputs): deeper stages are not run.

        Returns:
            dict[str->Tensor]: the requested outputs up to and including ``last_feature``.
        """
        if last_feature not in self._out_features:
            raise ValueError(
                f"{last_feature!r} is not an output of this {type(self).__name__}: "
                f"{self._out_features}"
            )
        return run_stages_up_to(x, self.stages(), self._out_features, last_feature)
