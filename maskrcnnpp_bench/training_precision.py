"""
Suite "training_precision": one training step of a config in float32 against the same step
under a bfloat16 autocast (``SOLVER.AMP.ENABLED`` on the CPU:
:class:`~maskrcnnpp.engine.trainer.BFloat16CPUTrainer`), interleaved round by round.

Each config's model (random weights, seed 0) takes one batch from the config's own training
loader (its patches, crops, scales and batch size) and steps on it repeatedly with plain SGD at
a learning rate of 0, so every round sees the same weights and data; the ratio is float32's
time over bfloat16's, within each round, median over rounds.
"""

import os
from typing import Dict, List, Sequence

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.engine.trainer import NucleiTrainer

from .runner import RECORD_FIELDS, machine_info
from .timing import median_paired_ratio, summarize_seconds, time_interleaved

__all__ = ["training_precision_records"]


def _step_function(model, batch, optimizer, bfloat16: bool):
    def step():
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bfloat16):
            losses = model(batch)
        total = sum(loss.float() for loss in losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()

    return step


def training_precision_records(
    configs: Sequence[str], *, rounds: int, warmup: int, opts=()
) -> List[Dict[str, object]]:
    """
    Args:
        configs (list[str]): config files whose datasets are registered (e.g. the DSB2018 CPU
            configs once DSB2018 is prepared, or the quick configs on synthetic data).
        rounds, warmup (int): timed and untimed rounds.
        opts: more config overrides for every config.

    Returns:
        list[dict]: per config, a "float32" record (the reference) and a "bfloat16" one, with
        ``train_step_ms`` and ``train_step_ratio`` (bfloat16 / float32 time).
    """
    records = []
    for config in configs:
        cfg = setup_cfg(
            config,
            [
                "MODEL.WEIGHTS",
                "",
                "MODEL.DEVICE",
                "cpu",
                "DATALOADER.NUM_WORKERS",
                "0",
                *map(str, opts),
            ],
        )
        torch.manual_seed(0)
        model = build_model(cfg).train()
        batch = next(iter(NucleiTrainer.build_train_loader(cfg)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        with EventStorage(0):  # Detectron2's heads log training statistics
            seconds = time_interleaved(
                {
                    p: _step_function(model, batch, optimizer, p == "bfloat16")
                    for p in ("float32", "bfloat16")
                },
                rounds=rounds,
                warmup=warmup,
                device="cpu",
            )
        name = os.path.splitext(os.path.relpath(config))[0]
        for precision, times in seconds.items():
            record = dict.fromkeys(RECORD_FIELDS)
            record.update(
                suite="training_precision",
                model=name,
                variant=precision,
                batch=len(batch),
                device="cpu",
                threads=torch.get_num_threads(),
                reference=f"{name} float32",
                train_step_ms=summarize_seconds(times),
                train_step_ratio=median_paired_ratio(times, seconds["float32"]),
                notes={
                    "speedup_vs_float32": round(median_paired_ratio(seconds["float32"], times), 2)
                },
                machine=machine_info(),
            )
            records.append(record)
    return records
