"""
The training runs of a model comparison: one ``tools/train_net.py`` subprocess per
(model, seed) (``python -m maskrcnnpp.cli.train_net``, the same tool, see :func:`train_command`),
each in its own folder ``<root>/<model>/seed<k>/``, resumable.

A run folder is

- **finished** when it has ``final_metrics.json`` (train_net.py writes it after the final
  evaluation): it is not trained again;
- **stopped** when it has a ``last_checkpoint`` but no ``final_metrics.json``: it is trained
  again with ``--resume``;
- **new** otherwise: it is trained from the start.

A model is a config file (trained by ``tools/train_net.py``) or a peer, ``peer:stardist`` or
``peer:cellpose`` (trained by ``tools/train_peer.py`` in the peers' environment, see
:mod:`maskrcnnpp.comparison.peers.runs`), whose run folders follow the same rules.

Beside the run's own files each run folder gets ``compare_run.json`` (written atomically),
the run's command, its attempts' wall times, thread counts and machine::

    {"config_file": abs path or "peer:KIND", "opts": [...], "seed": k,
     "attempts": [{"command": [...], "resumed": bool, "started": unix time,
                   "wall_seconds": float or null, "threads": OMP_NUM_THREADS,
                   "machine": {...}}, ...],
     "train_seconds": sum of the attempts}

An attempt is recorded before its subprocess starts (``wall_seconds`` null) and completed when
it ends. An attempt that never completed (the comparison itself was killed) counts from its
start to the newest checkpoint it wrote, the work a resumed run keeps; the attempt that resumes
it first writes that time into the stopped attempt (``wall_seconds``, with ``"stopped": true``),
since the resumed run writes checkpoints of its own. The wall time is that of the whole
subprocess: start-up, training and the final evaluation.
"""

import concurrent.futures
import glob
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from ..config.setup import setup_cfg
from ..evaluation.run_records import (
    RUN_RECORD_NAME,
    final_metrics_path,
    has_final_metrics,
    machine_description,
    read_run_record,
    write_run_record,
)
from ..utils.cli import error_message
from .peers.runs import check_peer_opts, peer_kind, peer_train_command

__all__ = [
    "ModelSpec",
    "TrainingRun",
    "parse_model_spec",
    "plan_runs",
    "run_status",
    "train_runs",
    "TRAIN_MODULE",
    "train_command",
]

_LOG_NAME = "compare_log.txt"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# set by the comparison itself, so a model's overrides may not set them
_RESERVED_KEYS = ("SEED", "OUTPUT_DIR")


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: a name (its folder under the root), a config, overrides."""

    name: str
    config_file: str
    opts: Tuple[str, ...] = ()


@dataclass
class TrainingRun:
    """One (model, seed) training: its folder and the train_net.py arguments it needs."""

    model: ModelSpec
    seed: int
    output_dir: str
    opts: Tuple[str, ...] = field(default=())  # common overrides then the model's own


def parse_model_spec(tokens):
    """
    Args:
        tokens (list[str]): ``["NAME=CONFIG.yaml", KEY, VALUE, ...]`` as given to
            ``tools/compare.py --model``.

    Returns:
        ModelSpec
    """
    tokens = list(tokens)
    if not tokens or "=" not in tokens[0]:
        raise ValueError(
            f"--model {' '.join(tokens)}: the first value must be NAME=CONFIG.yaml; got "
            f"{tokens[0] if tokens else 'nothing'!r}"
        )
    name, config_file = tokens[0].split("=", 1)
    check_model_name(name, f"--model {tokens[0]}")
    if not config_file:
        raise ValueError(f"--model {tokens[0]}: no config file after '='")
    opts = tuple(tokens[1:])
    check_opts(opts, f"--model {tokens[0]}")
    if peer_kind(config_file):
        check_peer_opts(opts, f"--model {tokens[0]}")
    return ModelSpec(name, config_file, opts)


def check_model_name(name, where):
    """A model name is a folder name: letters, digits and ``_ . + -``."""
    if not _NAME_PATTERN.match(name):
        raise ValueError(
            f"{where}: model name {name!r} must start with a letter or digit and contain only "
            "letters, digits and _ . + - (it names the run folder)"
        )


def check_opts(opts, where):
    """KEY VALUE pairs; SEED and OUTPUT_DIR are the comparison's own."""
    if len(opts) % 2:
        raise ValueError(
            f"{where}: overrides must be KEY VALUE pairs; got an odd number ({len(opts)}): "
            f"{' '.join(opts)}"
        )
    for key in opts[::2]:
        if key in _RESERVED_KEYS:
            raise ValueError(
                f"{where}: {key} is set by the comparison (one folder and one seed per run); "
                "remove it from the overrides"
            )


def plan_runs(models: Sequence[ModelSpec], seeds: Sequence[int], output_root, common_opts=()):
    """
    Returns:
        list[TrainingRun]: one per (model, seed), models in the given order.
    """
    check_opts(tuple(common_opts), "--opts")
    names = [m.name for m in models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"model names must be unique; given more than once: {duplicated}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be unique; got {list(seeds)}")
    runs = []
    for model in models:
        if peer_kind(model.config_file):
            check_peer_opts(tuple(common_opts), f"--opts with the peer '{model.name}'")
        elif not os.path.isfile(model.config_file):
            raise FileNotFoundError(
                f"model '{model.name}': config file {model.config_file} does not exist"
            )
        else:  # unknown keys and bad values now, not after the other models' trainings
            try:
                setup_cfg(model.config_file, tuple(common_opts) + tuple(model.opts))
            except (KeyError, ValueError, FileNotFoundError) as e:
                raise type(e)(f"model '{model.name}': {error_message(e)}") from e
        for seed in seeds:
            runs.append(
                TrainingRun(
                    model=model,
                    seed=int(seed),
                    output_dir=os.path.join(output_root, model.name, f"seed{int(seed)}"),
                    opts=tuple(common_opts) + tuple(model.opts),
                )
            )
    return runs


def run_status(output_dir):
    """``"finished"``, ``"stopped"`` or ``"new"`` (module docstring)."""
    if has_final_metrics(output_dir):
        return "finished"
    if os.path.isfile(os.path.join(output_dir, "last_checkpoint")):
        return "stopped"
    return "new"


# the training tool (tools/train_net.py, maskrcnnpp-train) as a module of the installed package
TRAIN_MODULE = "maskrcnnpp.cli.train_net"


def train_command(train_script=None):
    """The start of one training's command: ``python -m maskrcnnpp.cli.train_net``, the tool of
    the package this process imports (also where the package is installed without the
    checkout), or ``python TRAIN_SCRIPT``."""
    return [sys.executable, train_script] if train_script else [sys.executable, "-m", TRAIN_MODULE]


def _tool_name(command):
    """``train_net.py`` of ``python -m maskrcnnpp.cli.train_net ...``, ``train_peer.py`` of
    ``python .../train_peer.py ...``: the tool a failure message names."""
    if command[1] == "-m":
        return command[2].rsplit(".", 1)[-1] + ".py"
    return os.path.basename(command[1])


def _attempt_seconds(attempt, output_dir):
    if attempt.get("wall_seconds") is not None:
        return float(attempt["wall_seconds"])
    # never completed: from its start to the newest checkpoint it left, if any
    started = float(attempt.get("started", 0.0))
    # Detectron2's checkpoints; a peer's run (other checkpoint names) by its last_checkpoint
    checkpoints = glob.glob(os.path.join(output_dir, "model_*.pth")) or glob.glob(
        os.path.join(output_dir, "last_checkpoint")
    )
    written = [os.path.getmtime(p) for p in checkpoints]
    written = [t for t in written if t >= started]
    return max(written) - started if written else 0.0


def _close_stopped_attempts(record, output_dir):
    """Write the kept training time into every attempt that never completed, before a resumed
    run adds checkpoints of its own (module docstring)."""
    for attempt in record["attempts"]:
        if attempt.get("wall_seconds") is None:
            attempt["wall_seconds"] = _attempt_seconds(attempt, output_dir)
            attempt["stopped"] = True


def train_seconds(record, output_dir):
    """Sum of the wall times of a run's attempts (module docstring)."""
    return sum(_attempt_seconds(a, output_dir) for a in record["attempts"])


def _config_identity(path):
    """A config path from its last ``configs/`` folder on (the whole path when there is none),
    so that the records of a comparison stay valid in a checkout at another place."""
    position = path.rfind(os.sep + "configs" + os.sep) if isinstance(path, str) else -1
    return path[position + 1 :] if position >= 0 else path


def _check_same_setting(run, record, config_file):
    path = os.path.join(run.output_dir, RUN_RECORD_NAME)
    for key, expected in (
        ("config_file", config_file),
        ("opts", list(run.opts)),
        ("seed", run.seed),
    ):
        same = (
            _config_identity(record.get(key)) == _config_identity(expected)
            if key == "config_file"
            else record.get(key) == expected
        )
        if not same:
            raise ValueError(
                f"{path}: the run folder was made with {key} = {record.get(key)!r}, the comparison "
                f"now asks for {expected!r} (model '{run.model.name}'); use another output root "
                "or model name, or delete the folder"
            )


def _run_subprocess(command, env, log_path):
    """Run ``command``, appending its output to ``log_path``; returns the exit status."""
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        return subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def _train_one(run, *, train_start, threads, runner):
    """Train one run unless finished; returns None or an error message."""
    status = run_status(run.output_dir)
    kind = peer_kind(run.model.config_file)
    config_file = run.model.config_file if kind else os.path.abspath(run.model.config_file)
    record = read_run_record(run.output_dir)
    if record is not None and status != "new":
        _check_same_setting(run, record, config_file)
    if status == "finished":
        return None
    os.makedirs(run.output_dir, exist_ok=True)
    if record is None or status == "new":
        # a folder without a checkpoint starts again: earlier attempts bought nothing
        record = {
            "config_file": config_file,
            "opts": list(run.opts),
            "seed": run.seed,
            "attempts": [],
        }
    if status == "stopped":
        _close_stopped_attempts(record, run.output_dir)
    if kind:
        command = peer_train_command(
            kind, run.opts, seed=run.seed, output_dir=run.output_dir, resume=status == "stopped"
        )
    else:
        command = [*train_start, "--config-file", config_file]
        command += ["--resume"] if status == "stopped" else []
        command += [*run.opts, "SEED", str(run.seed), "OUTPUT_DIR", run.output_dir]
    attempt = {
        "command": command,
        "resumed": status == "stopped",
        "started": time.time(),
        "wall_seconds": None,
        "threads": threads,
        "machine": machine_description(),
    }
    record["attempts"].append(attempt)
    record["train_seconds"] = train_seconds(record, run.output_dir)
    write_run_record(run.output_dir, record)

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    returncode = runner(command, env, os.path.join(run.output_dir, _LOG_NAME))
    attempt["wall_seconds"] = time.perf_counter() - start
    record["train_seconds"] = train_seconds(record, run.output_dir)
    write_run_record(run.output_dir, record)
    tool = _tool_name(command)
    if returncode != 0:
        return (
            f"model '{run.model.name}' seed {run.seed}: {tool} exited with status "
            f"{returncode}; see {os.path.join(run.output_dir, _LOG_NAME)}"
        )
    if run_status(run.output_dir) != "finished":
        return (
            f"model '{run.model.name}' seed {run.seed}: {tool} wrote no "
            f"{final_metrics_path(run.output_dir)} (is DATASETS.TEST empty?); "
            f"see {os.path.join(run.output_dir, _LOG_NAME)}"
        )
    return None


def train_runs(
    runs: List[TrainingRun],
    *,
    jobs: int = 1,
    threads: Optional[int] = None,
    train_script: Optional[str] = None,
    runner: Optional[Callable] = None,
):
    """
    Train every run that is not finished, ``jobs`` at a time.

    Args:
        runs: from :func:`plan_runs`.
        jobs: trainings at once.
        threads: OMP_NUM_THREADS / MKL_NUM_THREADS of each training; default the CPU count
            divided by ``jobs`` (at least 1).
        train_script: a training script to run instead of the package's tool
            (:func:`train_command`).
        runner: ``runner(command, env, log_path) -> exit status``; default a subprocess whose
            output is appended to ``<run>/compare_log.txt``.

    Raises:
        RuntimeError: naming every run that failed (the others are trained all the same).
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1; got {jobs}")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    if train_script and not os.path.isfile(train_script):
        raise FileNotFoundError(f"the training script {train_script} does not exist")
    runner = runner or _run_subprocess
    kwargs = dict(train_start=train_command(train_script), threads=threads, runner=runner)
    if jobs == 1:
        errors = [_train_one(run, **kwargs) for run in runs]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            errors = list(pool.map(lambda run: _train_one(run, **kwargs), runs))
    errors = [e for e in errors if e]
    if errors:
        raise RuntimeError("some trainings failed:\n" + "\n".join(errors))
