"""Loading MODEL.WEIGHTS into a built model for the inference tools (predict, export, levels)."""
import logging
import os

from .checkpointer import AtomicDetectionCheckpointer

__all__ = ["load_model_weights"]

logger = logging.getLogger(__name__)


def load_model_weights(model, weights: str, *, allow_random: bool) -> None:
    """
    Load the checkpoint ``weights`` (``cfg.MODEL.WEIGHTS``) into ``model``.

    Args:
        allow_random (bool): an empty ``weights`` keeps the random initialisation, with a
            warning; otherwise it is an error.

    Raises:
        ValueError: ``weights`` is empty and random weights are not allowed, or the file
            cannot be loaded (truncated, not a checkpoint); the message names the file.
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
        AtomicDetectionCheckpointer(model).load(weights)
    except Exception as e:  # unpickling and torch.load raise many types on a bad file
        raise ValueError(f"MODEL.WEIGHTS {weights}: cannot load it ({type(e).__name__}: {e})") from e
