"""A DetectionCheckpointer whose files are always complete."""
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic_io import atomic_open


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """
    Detectron2 writes ``model_XXXX.pth`` in place and then re-points ``last_checkpoint``; a kill
    during the write leaves a truncated checkpoint that ``--resume`` then fails to load. Here
    both files are written to a temporary file, fsynced and renamed, checkpoint first, so
    ``last_checkpoint`` only ever names a complete file.
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
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)
