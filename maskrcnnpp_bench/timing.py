"""
Interleaved wall-clock timing of several callables in one process.

Every round runs every callable once, in an order rotated from one round to the next, so that
load drifts of a shared machine hit every callable alike; the ratio of two callables is taken
within each round (the steadiest figure on a noisy machine) and summarized by its median.
"""

import statistics
import time
from typing import Callable, Dict, List, Sequence

from .case import synchronize

__all__ = ["time_interleaved", "summarize_seconds", "median_paired_ratio"]


def time_interleaved(
    functions: Dict[str, Callable[[], object]], *, rounds: int, warmup: int, device: str
) -> Dict[str, List[float]]:
    """
    Args:
        functions: name -> callable, each run once per round.
        rounds: timed rounds (>= 1).
        warmup: untimed rounds first.
        device: "cpu" or "cuda[:k]": on CUDA the device is synchronized before and after
            every call, so each time covers the call's kernels.

    Returns:
        dict[name -> list[float]]: seconds of each timed round, in round order (so that the
        k-th entries of two names come from the same round).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    names = list(functions)
    seconds = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            functions[name]()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                seconds[name].append(elapsed)
    return seconds


def summarize_seconds(seconds: Sequence[float]) -> Dict[str, float]:
    """
    Returns:
        dict: "median", "q1", "q3" (quartiles), "min", "max" in milliseconds, and "runs".
    """
    ms = sorted(1000.0 * s for s in seconds)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "median": statistics.median(ms),
        "q1": q1,
        "q3": q3,
        "min": ms[0],
        "max": ms[-1],
        "runs": len(ms),
    }


def median_paired_ratio(seconds: Sequence[float], reference: Sequence[float]) -> float:
    """Median over rounds of ``seconds[k] / reference[k]``."""
    if len(seconds) != len(reference):
        raise ValueError(f"{len(seconds)} timings against {len(reference)} reference timings.")
    return statistics.median(a / b for a, b in zip(seconds, reference))
