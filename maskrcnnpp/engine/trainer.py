"""The trainer of every maskrcnnpp model: Detectron2's DefaultTrainer with the nuclei data
loaders and evaluators, the optimizer of ``SOLVER.OPTIMIZER``, DDP on any device, atomic
checkpoints and a training-curves plot."""

import logging
import os
import time
import weakref

import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint.checkpointer import AtomicDetectionCheckpointer
from ..config.checks import check_frozen_parameters_have_weights
from ..data.build import build_nuclei_mapper, build_nuclei_train_loader
from ..evaluation.evaluators import build_nuclei_evaluators
from ..modeling.detection_caps import scale_caps_with_area
from ..utils.inference_precision import inference_autocast
from .metrics_json import drop_partial_last_line
from .optimizer import build_optimizer
from .training_curves import TrainingCurvesHook

__all__ = ["NucleiTrainer", "BFloat16CPUTrainer", "create_ddp_model_any_device"]


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


class BFloat16CPUTrainer(SimpleTrainer):
    """
    ``SimpleTrainer`` whose forward pass (losses included) runs under ``torch.autocast`` to
    bfloat16 on the CPU; backward follows the forward's dtypes, the weights, gradients and
    optimizer stay float32. bfloat16 has float32's exponent range, so no loss scaling is needed
    (Detectron2's AMPTrainer, float16 with a gradient scaler, is CUDA only).
    """

    def run_step(self):
        assert self.model.training, "BFloat16CPUTrainer: the model was put in eval mode"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
        loss_dict = {name: loss.float() for name, loss in loss_dict.items()}
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def _step_trainer_class(cfg, model):
    """SimpleTrainer; with ``SOLVER.AMP.ENABLED`` Detectron2's AMPTrainer (float16) on CUDA
    and :class:`BFloat16CPUTrainer` on the CPU."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer
    on_cuda = next(model.parameters()).is_cuda
    return AMPTrainer if on_cuda else BFloat16CPUTrainer


class NucleiTrainer(DefaultTrainer):
    """
    ``DefaultTrainer`` with:

    - the training loader of :func:`~maskrcnnpp.data.build.build_nuclei_train_loader`
      (semantic models never group batches by aspect ratio; ``PixelAreaTrainingSampler``)
      and the test loader with :func:`~maskrcnnpp.data.build.build_nuclei_mapper`;
    - the optimizer of ``SOLVER.OPTIMIZER`` (:func:`~maskrcnnpp.engine.optimizer.build_optimizer`);
    - :func:`build_nuclei_evaluators` (COCO AP or semantic metrics, plus nuclei metrics),
      run in the number format of ``TEST.PRECISION``;
    - DDP given ``device_ids`` only for CUDA modules (``--num-gpus N`` on a CPU machine);
    - ``SOLVER.AMP.ENABLED`` on the CPU: bfloat16 autocast (:class:`BFloat16CPUTrainer`);
    - :class:`AtomicDetectionCheckpointer` and :class:`TrainingCurvesHook`;
    - a ValueError before training when frozen parameters have no weights to load
      (:func:`~maskrcnnpp.config.checks.check_frozen_parameters_have_weights`).
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with one change: DDP gets device_ids only for CUDA modules.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        check_frozen_parameters_have_weights(cfg, model)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model_any_device(model, broadcast_buffers=False)
        self._trainer = _step_trainer_class(cfg, model)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        """DefaultTrainer.build_model, with test-time caps that follow the image's area
        (:func:`~maskrcnnpp.modeling.detection_caps.scale_caps_with_area`)."""
        return scale_caps_with_area(super().build_model(cfg), cfg)

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

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """DefaultTrainer.test in the number format of ``TEST.PRECISION``."""
        with inference_autocast(cfg.TEST.PRECISION, model):
            return super().test(cfg, model, evaluators)

    def build_writers(self):
        # a run killed mid-write may have left half a line; --resume appends after it
        drop_partial_last_line(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))
        return super().build_writers()

    def build_hooks(self):
        hooks = super().build_hooks()
        hooks.append(
            TrainingCurvesHook(self.cfg.OUTPUT_DIR, period=self.cfg.SOLVER.CHECKPOINT_PERIOD)
        )
        return hooks
