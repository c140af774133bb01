"""A DetectionCheckpointer whose files are always complete."""
import contextlib
import glob
import os
import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic_io import atomic_open


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """
    Detectron2 writes ``model_XXXX.pth`` in place and then re-points ``last_checkpoint``; a kill
    during the write leaves a truncated checkpoint that ``--resume`` then fails to load. Here
    both files are written to a temporary file, fsynced and renamed, checkpoint first, so
    ``last_checkpoint`` only ever names a complete file. A temporary file left by a process
    killed while writing ``name.pth`` is removed when ``name.pth`` is saved again.
    """

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

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise RuntimeError(
                f"cannot load checkpoint {filename} (truncated, or not a checkpoint): {e}"
            ) from e

    def _remove_stale_temporaries(self, basename):
        """Temporary files of ``basename`` (see ``atomic_open``) left by a killed writer: only
        the main process of this run writes checkpoints into ``save_dir``, so none is live."""
        pattern = os.path.join(glob.escape(self.save_dir), f".{glob.escape(basename)}.*.tmp")
        for stale in glob.glob(pattern):
            self.logger.info(f"Removing {stale}, left by a process killed while writing it")
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
