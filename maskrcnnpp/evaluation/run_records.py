"""
The records a run folder keeps, their names, and the one place that writes and reads them:

- ``final_metrics.json``: the final evaluation, ``{"config_file", "method", "machine",
  "threads", "results": {dataset: {task: {metric: value}}}}``, written by ``tools/train_net.py``
  after training (or ``--eval-only``), by the classical baseline and by the peers' runs;
  ``machine`` and ``threads`` say where and with how many compute threads it was made;
- ``inference/<dataset>/nuclei_per_image.json``: the per-image nuclei statistics, written by
  :class:`~maskrcnnpp.evaluation.NucleiEvaluator`;
- ``compare_run.json``: the comparison tool's record of a run (its setting and every
  attempt's command, wall time, threads and machine), written by
  :mod:`maskrcnnpp.comparison.runs`.

``results/`` keeps these records of every run its tables are computed from.
"""

import json
import os
import platform

import torch

from ..utils.atomic_io import atomic_open

__all__ = [
    "FINAL_METRICS_NAME",
    "PER_IMAGE_NAME",
    "RUN_RECORD_NAME",
    "final_metrics_path",
    "has_final_metrics",
    "machine_description",
    "per_image_path",
    "read_final_metrics",
    "read_per_image_stats",
    "read_run_record",
    "write_final_metrics",
    "write_run_record",
]

FINAL_METRICS_NAME = "final_metrics.json"
PER_IMAGE_NAME = "nuclei_per_image.json"
RUN_RECORD_NAME = "compare_run.json"


def machine_description():
    """The machine a run is made on: node name, platform, processor model and CPU count."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            processor = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                processor,
            )
    except OSError:
        pass
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "processor": processor,
        "cpu_count": os.cpu_count(),
    }


def final_metrics_path(output_dir):
    return os.path.join(output_dir, FINAL_METRICS_NAME)


def has_final_metrics(output_dir):
    """Whether the run in ``output_dir`` was evaluated to the end (its record is written last)."""
    return os.path.isfile(final_metrics_path(output_dir))


def per_image_path(output_dir, dataset):
    """``<output_dir>/inference/<dataset>/nuclei_per_image.json``."""
    return os.path.join(output_dir, "inference", dataset, PER_IMAGE_NAME)


def write_final_metrics(output_dir, results, *, config_file=None, method=None):
    """
    Write ``final_metrics.json`` atomically.

    Args:
        results (dict): ``{dataset: {task: {metric: value}}}``.
        config_file (str or None): the run's config; None for a method without one.
        method (str or None): what made the results when it is not a config's model (the
            classical baseline, a peer).
    """
    record = {
        "config_file": config_file,
        "method": method,
        "machine": machine_description(),
        "threads": torch.get_num_threads(),
        "results": results,
    }
    with atomic_open(final_metrics_path(output_dir), "w") as f:
        json.dump(record, f, indent=2)


def _read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def read_final_metrics(output_dir):
    """
    Returns:
        dict: the run's ``final_metrics.json``, checked to hold ``{"results": {dataset:
        {task: {metric: value}}}}`` with at least one dataset.

    Raises:
        FileNotFoundError, ValueError: naming the file.
    """
    path = final_metrics_path(output_dir)
    record = _read_json(path, "final metrics")
    results = record.get("results") if isinstance(record, dict) else None
    if (
        not isinstance(results, dict)
        or not results
        or not all(isinstance(r, dict) for r in results.values())
    ):
        raise ValueError(
            f"{path}: expected {{'results': {{dataset: {{task: {{metric: value}}}}}}}}"
        )
    return record


def read_per_image_stats(output_dir, dataset):
    """
    Returns:
        list[dict]: the run's ``inference/<dataset>/nuclei_per_image.json`` (one dict of
        statistics per image), or None when the run has none for ``dataset``.
    """
    path = per_image_path(output_dir, dataset)
    if not os.path.isfile(path):
        return None
    per_image = _read_json(path, "per-image nuclei statistics")
    if not isinstance(per_image, list):
        raise ValueError(f"{path}: expected a list of per-image dicts")
    return per_image


def read_run_record(output_dir):
    """The run's ``compare_run.json`` as a dict (with a list ``attempts``), or None when absent."""
    path = os.path.join(output_dir, RUN_RECORD_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except ValueError as e:
        raise ValueError(
            f"{path}: not valid JSON ({e}); delete it to start the run's record again"
        ) from e
    if not isinstance(record, dict) or not isinstance(record.get("attempts"), list):
        raise ValueError(f"{path}: expected an object with a list 'attempts'")
    return record


def write_run_record(output_dir, record):
    """Write ``compare_run.json`` atomically."""
    with atomic_open(os.path.join(output_dir, RUN_RECORD_NAME), "w") as f:
        json.dump(record, f, indent=2)
