"""The trainer of every maskrcnnpp model: Detectron2's DefaultTrainer with the nuclei data
loaders and evaluators, the optimizer of ``SOLVER.OPTIMIZER``, DDP on any device, atomic
checkpoints and a training-curves plot."""
import logging
import os
import weakref

from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data.build import build_nuclei_mapper, build_nuclei_train_loader
from .checkpointer import AtomicDetectionCheckpointer
from .evaluators import build_nuclei_evaluators
from .metrics_json import drop_partial_last_line
from .optimizer import build_optimizer
from .training_curves import TrainingCurvesHook

__all__ = ["NucleiTrainer", "create_ddp_model_any_device"]


def create_ddp_model_any_device(model, **kwargs):
    """
    Like Detectron2's ``create_ddp_model``, but passes ``device_ids`` only for CUDA modules:
    DDP rejects ``device_ids`` for CPU modules, which breaks ``--num-gpus N`` on a CPU machine.
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    kwargs.setdefault("device_ids", [comm.get_local_rank()] if on_cuda else None)
    return create_ddp_model(model, **kwargs)


class NucleiTrainer(DefaultTrainer):
    """
    ``DefaultTrainer`` with:

    - the training loader of :func:`~maskrcnnpp.data.build.build_nuclei_train_loader`
      (semantic models never group batches by aspect ratio; ``PixelAreaTrainingSampler``)
      and the test loader with :func:`~maskrcnnpp.data.build.build_nuclei_mapper`;
    - the optimizer of ``SOLVER.OPTIMIZER`` (:func:`~maskrcnnpp.engine.optimizer.build_optimizer`);
    - :func:`build_nuclei_evaluators` (COCO AP or semantic metrics, plus nuclei metrics);
    - DDP given ``device_ids`` only for CUDA modules (``--num-gpus N`` on a CPU machine);
    - :class:`AtomicDetectionCheckpointer` and :class:`TrainingCurvesHook`.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with one change: DDP gets device_ids only for CUDA modules.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model_any_device(model, broadcast_buffers=False)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_nuclei_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_nuclei_mapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_nuclei_evaluators(cfg, dataset_name, output_folder)

    def build_writers(self):
        # a run killed mid-write may have left half a line; --resume appends after it
        drop_partial_last_line(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))
        return super().build_writers()

    def build_hooks(self):
        hooks = super().build_hooks()
        hooks.append(TrainingCurvesHook(self.cfg.OUTPUT_DIR, period=self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return hooks
