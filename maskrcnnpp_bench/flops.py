"""Parameter and FLOP counts (fvcore's counter: one "flop" per multiply-add)."""

import logging

import torch
from fvcore.nn import FlopCountAnalysis

__all__ = ["count_parameters", "count_gflops", "count_active_parameters"]


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_gflops(module: torch.nn.Module, inputs: tuple) -> float:
    """
    fvcore's FLOP count of ``module(*inputs)`` in G (multiply-adds of convs and matmuls; ops
    fvcore has no formula for, e.g. NMS, count 0), traced in eval mode without gradients.
    """
    was_training = module.training
    module.eval()
    # fvcore logs every op it skips at WARNING; the total is what we report.
    logger = logging.getLogger("fvcore.nn.jit_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(module, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return analysis.total() / 1e9
    finally:
        logger.setLevel(level)
        module.train(was_training)


def count_active_parameters(module: torch.nn.Module, run) -> int:
    """
    Parameters of the submodules of ``module`` that ``run()`` actually calls (each counted
    once): the size of the sub-network a pruned model runs.
    """
    called = set()
    handles = [
        m.register_forward_hook(lambda m, i, o: called.add(m))
        for m in module.modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return sum(p.numel() for m in called for p in m.parameters(recurse=False))
