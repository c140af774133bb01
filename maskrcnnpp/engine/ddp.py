"""DistributedDataParallel on CUDA or on the CPU (GLOO)."""
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm


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
