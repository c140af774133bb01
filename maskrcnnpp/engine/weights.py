"""Loading MODEL.WEIGHTS into a built model for the inference tools (predict, export, levels)."""
import logging
import os

from .checkpointer import AtomicDetectionCheckpointer, WeightsError

__all__ = ["load_model_weights"]

logger = logging.getLogger(__name__)


def load_model_weights(model, weights: str, *, allow_random: bool) -> None:
    """
    Load the checkpoint ``weights`` (``cfg.MODEL.WEIGHTS``) into ``model``. Every weight of the
    model must come from the checkpoint: a checkpoint of another architecture (or of the same
    one with other widths) is refused, not partly loaded.

    Args:
        allow_random (bool): an empty ``weights`` keeps the random initialisation, with a
            warning; otherwise it is an error.

    Raises:
        ValueError (:class:`~maskrcnnpp.engine.checkpointer.WeightsError` for a bad file): one
            line naming the file: ``weights`` is empty and random weights are not allowed,
            the file is not a checkpoint, or it lacks some of the model's weights (how many
            matched, a few missing ones).
        FileNotFoundError: ``weights`` is a local path that does not exist.
    """
    if not weights:
        if not allow_random:
            raise ValueError("MODEL.WEIGHTS is empty: give the trained checkpoint (MODEL.WEIGHTS path/model_final.pth).")
        logger.warning("MODEL.WEIGHTS is empty: using randomly initialised weights.")
        return
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS: no such file: {weights}")
    try:
        AtomicDetectionCheckpointer(model, require_all_weights=True).load(weights)
    except WeightsError as e:
        raise WeightsError(f"MODEL.WEIGHTS: {e}") from e
    except Exception as e:  # e.g. a URL that cannot be fetched
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"MODEL.WEIGHTS {weights}: cannot load it ({type(e).__name__}: {message})") from e
