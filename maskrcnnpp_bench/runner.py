"""
Measures groups of benchmark cases and turns the measurements into records (one per model x
variant x input x device).
"""

import datetime
import logging
import platform
from typing import Dict, List, Sequence

import torch

from .case import BenchmarkCase
from .flops import count_parameters
from .memory import measure_peak_memory
from .timing import median_paired_ratio, summarize_seconds, time_interleaved

__all__ = ["RECORD_FIELDS", "machine_info", "run_case_group", "group_cases"]

logger = logging.getLogger(__name__)

# Keys of every model record (throughput records have their own, see throughput.py).
RECORD_FIELDS = (
    "suite", "model", "variant", "height", "width", "batch", "device", "threads",
    "reference", "params_m", "gflops", "latency_ms", "latency_ratio", "train_step_ms",
    "train_step_ratio", "peak_memory_mib", "counts", "throughput", "notes", "machine",
)  # fmt: skip


def machine_info() -> Dict[str, object]:
    """What the numbers were measured on."""
    info = {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def group_cases(cases: Sequence[BenchmarkCase]) -> List[List[BenchmarkCase]]:
    """Cases split into groups of equal (suite, input, batch, device), in first-seen order."""
    groups: Dict[tuple, List[BenchmarkCase]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    return list(groups.values())


def run_case_group(
    cases: Sequence[BenchmarkCase],
    *,
    rounds: int,
    warmup: int,
    train_rounds: int,
    memory: bool = True,
    flops: bool = True,
) -> List[Dict[str, object]]:
    """
    Builds every case of one group in this process and measures them side by side: params,
    FLOPs, kept counts (from a first, untimed inference), the peak memory of one inference
    and of one training step (each after the first inference), interleaved inference latency
    (``rounds`` after ``warmup``) and interleaved training-step time (``train_rounds`` after
    one warm-up round; 0 skips it). The first case is the reference of the ratios.

    Args:
        memory: measure peak memory (see :mod:`memory`).

    Returns:
        list[dict]: one record per case, with the keys of :data:`RECORD_FIELDS`.
    """
    if len({c.group for c in cases}) != 1:
        raise ValueError(f"cases of different groups: {sorted({c.group for c in cases})}")
    device = cases[0].device
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate case names in one group: {names}")
    workloads = {c.name: c.build() for c in cases}
    records = {}
    for case in cases:
        workload = workloads[case.name]
        record = {
            "suite": case.suite,
            "model": case.model,
            "variant": case.variant,
            "height": case.height,
            "width": case.width,
            "batch": case.batch,
            "device": device,
            "threads": torch.get_num_threads(),
            "reference": cases[0].name,
            "params_m": count_parameters(workload.module) / 1e6,
            "gflops": workload.gflops() if flops else None,
            "counts": workload.infer(),  # also the first warm-up run
            "throughput": None,
            "notes": dict(case.notes),
            "machine": machine_info(),
        }
        if memory:
            record["peak_memory_mib"] = {"inference": measure_peak_memory(device, workload.infer)}
            if case.train and train_rounds > 0:
                record["peak_memory_mib"]["train_step"] = measure_peak_memory(
                    device, workload.train_step
                )
        else:
            record["peak_memory_mib"] = None
        record["notes"].update(getattr(workload, "notes", {}))
        records[case.name] = record
    counts = {name: r["counts"] for name, r in records.items()}
    if len({tuple(sorted(c.items())) for c in counts.values()}) > 1:
        logger.warning("kept counts differ between the compared models: %s", counts)

    infer_seconds = time_interleaved(
        {name: w.infer for name, w in workloads.items()},
        rounds=rounds,
        warmup=warmup,
        device=device,
    )
    trainable = [c.name for c in cases if c.train]
    train_seconds = {}
    if train_rounds > 0 and trainable:
        train_seconds = time_interleaved(
            {name: workloads[name].train_step for name in trainable},
            rounds=train_rounds,
            warmup=1,
            device=device,
        )
    reference = cases[0].name
    for name, record in records.items():
        record["latency_ms"] = summarize_seconds(infer_seconds[name])
        record["latency_ratio"] = median_paired_ratio(infer_seconds[name], infer_seconds[reference])
        if name in train_seconds:
            record["train_step_ms"] = summarize_seconds(train_seconds[name])
            record["train_step_ratio"] = (
                median_paired_ratio(train_seconds[name], train_seconds[reference])
                if reference in train_seconds
                else None
            )
        else:
            record["train_step_ms"] = record["train_step_ratio"] = None
    del workloads
    return [{key: records[c.name][key] for key in RECORD_FIELDS} for c in cases]
