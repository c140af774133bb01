"""
Peak memory of one call (an inference, a training step), measured in this process:

- CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call
  (tensors only; the caching allocator's reserve is not counted).
- CPU (Linux with glibc): the process's resident-set high-water mark (``VmHWM``), reset
  through ``/proc/self/clear_refs`` right before the call, minus the resident set then. Before
  that, ``malloc_trim(0)`` hands the memory that earlier calls freed but the allocator kept
  back to the system, so the figure is what the call itself needed, not what earlier calls
  left cached. No tracing allocator is involved, so the call runs at full speed.

Where neither applies (another OS or C library, a kernel without ``clear_refs``) the result
holds the reason instead of a figure.
"""

import ctypes
import ctypes.util
import gc
from typing import Callable, Dict, Optional

import torch

from .case import synchronize

__all__ = ["measure_peak_memory", "cpu_probe_unavailable"]

_MIB = 1024.0 * 1024.0


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {field} line")


def _reset_peak_rss() -> None:
    # "5" resets the high-water mark to the current resident set size (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _malloc_trim():
    """glibc's ``malloc_trim`` or None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


def cpu_probe_unavailable() -> Optional[str]:
    """None when the CPU probe works here, else the reason it does not."""
    if _malloc_trim() is None:
        return "no glibc malloc_trim"
    try:
        _reset_peak_rss()
        _proc_status_kib("VmHWM")
    except (OSError, KeyError) as e:
        return f"/proc/self/clear_refs or /proc/self/status unusable: {e}"
    return None


def measure_peak_memory(device: str, call: Callable[[], object]) -> Dict[str, object]:
    """
    Runs ``call()`` once and measures its peak memory.

    Returns:
        dict: "mib" (peak above the memory in use before the call, MiB) and "method"; on the
        CPU also "process_peak_mib" (the whole process's resident-set peak); "error" (and no
        figure) when the device offers no way to measure here.
    """
    if str(device).startswith("cuda"):
        torch_device = torch.device(device)
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(torch_device)
        before = torch.cuda.memory_allocated(torch_device)
        call()
        synchronize(device)
        return {
            "mib": (torch.cuda.max_memory_allocated(torch_device) - before) / _MIB,
            "method": "torch.cuda.max_memory_allocated above the allocation before the call",
        }
    reason = cpu_probe_unavailable()
    if reason is not None:
        call()
        return {"mib": None, "method": None, "error": reason}
    gc.collect()
    _malloc_trim()(0)
    baseline = _proc_status_kib("VmRSS")
    _reset_peak_rss()
    call()
    peak = _proc_status_kib("VmHWM")
    return {
        "mib": (peak - baseline) / 1024.0,
        "process_peak_mib": peak / 1024.0,
        "method": "VmHWM above VmRSS before the call, after malloc_trim",
    }
