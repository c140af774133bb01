"""A DetectionCheckpointer whose files are always complete, and whose loads are checked: a file
that is not a checkpoint, or a checkpoint of another architecture, is refused in one line; and
:func:`load_model_weights`, how the inference tools (predict, export, levels) load
``MODEL.WEIGHTS``."""

import contextlib
import glob
import logging
import os
from collections.abc import Mapping

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

from ..utils.atomic_io import atomic_open

__all__ = ["AtomicDetectionCheckpointer", "WeightsError", "load_model_weights"]

logger = logging.getLogger(__name__)

# How many missing weight names a refusal lists.
_NAMES_SHOWN = 3


class WeightsError(ValueError):
    """A checkpoint that cannot be used: not a checkpoint, or not this model's. The message is
    one line and names the file."""


def _first_sentence(error: BaseException) -> str:
    """The start of an error's message, on one line (torch.load's run over many lines)."""
    text = (str(error).strip() or type(error).__name__).splitlines()[0].strip()
    text = text.split(". ")[0]
    return text if len(text) <= 120 else text[:117] + "..."


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """
    Detectron2 writes ``model_XXXX.pth`` in place and then re-points ``last_checkpoint``; a kill
    during the write leaves a truncated checkpoint that ``--resume`` then fails to load. Here
    both files are written to a temporary file, fsynced and renamed, checkpoint first, so
    ``last_checkpoint`` only ever names a complete file. A temporary file left by a process
    killed while writing ``name.pth`` is removed when ``name.pth`` is saved again.

    Loading is checked (Detectron2 only logs the keys it could not match, and carries on):

    * a file that is not a checkpoint raises :class:`WeightsError` "not a PyTorch or
      Detectron2 checkpoint: FILE";
    * a checkpoint that matches none of the model's weights raises :class:`WeightsError`
      (an initialisation may be partial, e.g. an FPN checkpoint into Mask R-CNN++, but not
      empty);
    * with ``require_all_weights=True`` (inference, export, ``--eval-only``) every weight of
      the model (parameters and persistent buffers) must come from the checkpoint, with its
      shape; otherwise :class:`WeightsError` says how many matched and names a few missing
      ones. An empty path is then an error too.
    """

    def __init__(self, model, save_dir="", *, require_all_weights=False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.require_all_weights = require_all_weights
        self._loading_path = None

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self._remove_stale_temporaries(basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)

    def load(self, path, checkpointables=None):
        if not path and self.require_all_weights:
            raise WeightsError(
                "MODEL.WEIGHTS is empty: give the trained checkpoint (MODEL.WEIGHTS path/model_final.pth)"
            )
        self._loading_path = path
        try:
            return super().load(path, checkpointables)
        finally:
            self._loading_path = None

    def _load_file(self, filename):
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # unpickling and torch.load raise many types on a bad file
            raise WeightsError(
                f"not a PyTorch or Detectron2 checkpoint: {filename} (truncated, or another kind "
                f"of file; {type(e).__name__}: {_first_sentence(e)})"
            ) from e
        state = loaded.get("model") if isinstance(loaded, Mapping) else None
        if not isinstance(state, Mapping) or not all(
            isinstance(v, (torch.Tensor, np.ndarray)) for v in state.values()
        ):
            what = (
                type(state).__name__ if not isinstance(state, Mapping) else "a dict of non-tensors"
            )
            raise WeightsError(
                f"not a PyTorch or Detectron2 checkpoint: {filename} (it holds {what}, not a "
                "state dict of tensors)"
            )
        # Weights stored in half precision (the shipped models) train and predict in float32.
        loaded["model"] = {
            key: value.float()
            if isinstance(value, torch.Tensor) and value.dtype == torch.float16
            else value
            for key, value in state.items()
        }
        return loaded

    def _load_model(self, checkpoint):
        path = self._loading_path or "the checkpoint"
        # BatchNorm's num_batches_tracked counts training steps; it is unused in eval mode
        expected = [k for k in self.model.state_dict() if not k.endswith("num_batches_tracked")]
        incompatible = super()._load_model(checkpoint)
        missing_set = set(_filter_reused_missing_keys(self.model, list(incompatible.missing_keys)))
        missing = [k for k in expected if k in missing_set]  # in model order
        num_matched = len(expected) - len(missing)
        shapes = {k: (c, m) for k, c, m in incompatible.incorrect_shapes}
        if expected and num_matched == 0:
            raise WeightsError(
                f"{path} matches none of the model's {len(expected)} weights (e.g. "
                f"{self._describe(missing, shapes)}): it is a checkpoint of another "
                "architecture; check MODEL.WEIGHTS against --config-file"
            )
        if self.require_all_weights and missing:
            raise WeightsError(
                f"{path} holds {num_matched} of the model's {len(expected)} weights; missing "
                f"{len(missing)}, e.g. {self._describe(missing, shapes)}: it was trained with "
                "another architecture or config; check MODEL.WEIGHTS against --config-file"
            )
        return incompatible

    @staticmethod
    def _describe(missing, shapes):
        names = []
        for key in missing[:_NAMES_SHOWN]:
            if key in shapes:
                checkpoint_shape, model_shape = shapes[key]
                key += f" (shape {list(checkpoint_shape)} in the file, {list(model_shape)} in the model)"
            names.append(key)
        return ", ".join(names) + (", ..." if len(missing) > _NAMES_SHOWN else "")

    def _remove_stale_temporaries(self, basename):
        """Temporary files of ``basename`` (see ``atomic_open``) left by a killed writer: only
        the main process of this run writes checkpoints into ``save_dir``, so none is live."""
        pattern = os.path.join(glob.escape(self.save_dir), f".{glob.escape(basename)}.*.tmp")
        for stale in glob.glob(pattern):
            self.logger.info(f"Removing {stale}, left by a process killed while writing it")
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)


def load_model_weights(model, weights: str) -> None:
    """
    Load the checkpoint ``weights`` (``cfg.MODEL.WEIGHTS``: a path, a URL or
    ``maskrcnnpp://NAME``) into ``model`` for inference or export. Every weight of the model
    must come from the checkpoint (the check of ``--eval-only``,
    :class:`AtomicDetectionCheckpointer` with ``require_all_weights``): an empty ``weights``
    (random weights) and a checkpoint of another architecture (or of the same one with other
    widths) are refused, not partly loaded.

    Raises:
        ValueError (:class:`~maskrcnnpp.checkpoint.checkpointer.WeightsError` for a bad file): one
            line naming the file: ``weights`` is empty, the file is not a checkpoint, or it
            lacks some of the model's weights (how many matched, a few missing ones).
        FileNotFoundError: ``weights`` is a local path that does not exist.
    """
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS: no such file: {weights}")
    try:
        AtomicDetectionCheckpointer(model, require_all_weights=True).load(weights)
    except WeightsError as e:  # the empty case's message names MODEL.WEIGHTS already
        raise WeightsError(f"MODEL.WEIGHTS: {e}" if weights else str(e)) from e
    except Exception as e:  # e.g. a URL that cannot be fetched
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"MODEL.WEIGHTS {weights}: cannot load it ({type(e).__name__}: {message})"
        ) from e
