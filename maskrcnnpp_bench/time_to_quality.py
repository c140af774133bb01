"""
Suite "time_to_quality": training cost to reach a quality, from finished training runs.

A run folder is what ``tools/train_net.py`` (or ``tools/compare.py``: ``ROOT/<model>/seed<k>``)
leaves: ``metrics.json`` (Detectron2's per-iteration records, with the evaluations of
``TEST.EVAL_PERIOD`` under keys such as ``nuclei/dsb_score``), ``final_metrics.json`` (the
evaluation after training) and, from the comparison tool, ``compare_run.json`` (the run's wall
time). For a metric and a target value, each run's record says after how many training
minutes an evaluation first reached it:

- the training time up to iteration k is the sum of Detectron2's per-iteration ``time`` over
  the logged iterations up to k (each logged value stands for the iterations since the
  previous record), so evaluation and start-up do not count;
- the final evaluation counts at the end of training; when ``compare_run.json`` gives the
  wall time of the whole run, that is reported beside it.

With only a final evaluation (the CPU recipes evaluate once), a run either reaches the target
at its full training time or not at all; ``TEST.EVAL_PERIOD`` gives finer curves.
"""

import json
import os
from typing import Dict, List, Optional, Sequence

from maskrcnnpp.engine.metrics_json import read_metrics_json

from .runner import RECORD_FIELDS, machine_info

__all__ = ["find_training_runs", "time_to_quality_records"]


def find_training_runs(paths: Sequence[str]) -> List[str]:
    """Run folders (with ``metrics.json``) among ``paths`` and their sub-folders up to two
    levels down (a comparison root)."""
    runs = []
    for path in paths:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"--training-runs: no such folder: {path}")
        for root, dirs, files in os.walk(path):
            depth = os.path.relpath(root, path).count(os.sep) + (root != path)
            if "metrics.json" in files:
                runs.append(root)
            if depth >= 2:
                dirs[:] = []
            dirs.sort()
    return runs


def _final_value(run: str, metric: str) -> Optional[float]:
    path = os.path.join(run, "final_metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        results = json.load(f).get("results", {})
    task, key = metric.split("/", 1)
    for dataset_results in results.values():
        value = dataset_results.get(task, {}).get(key)
        if value is not None:
            return float(value)
    return None


def _evaluations(records: List[Dict], metric: str):
    """(iteration, training seconds up to it, value) of every evaluation record of ``metric``,
    and the training seconds of the whole run."""
    elapsed, last_iteration, points = 0.0, -1, []
    for record in records:
        iteration = record.get("iteration")
        if iteration is None:
            continue
        if "time" in record:
            elapsed += float(record["time"]) * (iteration - last_iteration)
            last_iteration = iteration
        value = next(
            (v for k, v in record.items() if k == metric or k.endswith("/" + metric)), None
        )
        if value is not None:
            points.append((iteration, elapsed, float(value)))
    return points, elapsed


def time_to_quality_records(
    runs: Sequence[str], metric: str, target: float
) -> List[Dict[str, object]]:
    """
    Args:
        runs (list[str]): run folders (:func:`find_training_runs`).
        metric (str): "task/key" of the results, e.g. "nuclei/dsb_score" or "segm/AP".
        target (float): the value to reach (>=).

    Returns:
        list[dict]: per run, suite "time_to_quality", ``model`` the run's parent folder name
        (the comparison's model) and ``variant`` its own name (the seed), and
        ``throughput``-style fields: "minutes_to_target" (None: not reached), "final_value",
        "train_minutes" (all logged iterations), "wall_minutes" (compare_run.json of a finished
        run, or None).
    """
    records = []
    for run in runs:
        points, train_seconds = _evaluations(
            read_metrics_json(os.path.join(run, "metrics.json")), metric
        )
        final = _final_value(run, metric)
        # the final evaluation, unless metrics.json already logged it at the last iteration
        if final is not None and not (points and points[-1][2] == final):
            points.append((None, train_seconds, final))
        reached = next((seconds for _, seconds, value in points if value >= target), None)
        wall = None
        compare_record = os.path.join(run, "compare_run.json")
        if final is not None and os.path.isfile(compare_record):
            with open(compare_record) as f:
                wall = json.load(f).get("train_seconds")
        record = dict.fromkeys(RECORD_FIELDS)
        record.update(
            suite="time_to_quality",
            model=os.path.basename(os.path.dirname(os.path.abspath(run))),
            variant=os.path.basename(os.path.abspath(run)),
            device=None,
            throughput={
                "metric": metric,
                "target": target,
                "minutes_to_target": None if reached is None else reached / 60.0,
                "final_value": final if final is not None else (points[-1][2] if points else None),
                "evaluations": len(points),
                "train_minutes": train_seconds / 60.0,
                "wall_minutes": None if wall is None else wall / 60.0,
            },
            notes={"run": os.path.abspath(run)},
            machine=machine_info(),
        )
        records.append(record)
    return records
