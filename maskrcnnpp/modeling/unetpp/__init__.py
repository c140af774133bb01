"""Parts of the semantic UNet++: nested decoder, hybrid loss, sliding-window inference."""

from .hybrid_loss import hybrid_loss, segmentation_probabilities
from .nested_decoder import NestedDecoder, NestedDecoderNode
from .sliding_window import sliding_window_predict, window_starts

__all__ = [
    "hybrid_loss",
    "segmentation_probabilities",
    "NestedDecoder",
    "NestedDecoderNode",
    "sliding_window_predict",
    "window_starts",
]
