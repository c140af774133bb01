"""
Measurement of maskrcnnpp's models and tools (``tools/benchmark.py``): parameters, FLOPs,
interleaved latency, training-step time and peak memory of benchmark cases, and the
throughput of the data and evaluation code.
"""

from .case import BenchmarkCase, Workload
from .runner import RECORD_FIELDS, run_case_group

__all__ = ["BenchmarkCase", "Workload", "RECORD_FIELDS", "run_case_group"]
