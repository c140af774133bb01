"""
One peer run, as ``tools/train_peer.py`` does it and ``tools/compare.py`` calls it for a
``--model NAME=peer:KIND`` row, laid out like a ``tools/train_net.py`` run so that the
comparison reads it the same way:

1. the training and test datasets are exported for the peer (:func:`.data.export_split`,
   kept in ``$MASKRCNNPP_CACHE/peer_data`` and shared by every peer run);
2. ``tools/peers/<kind>_peer.py train`` trains from scratch within the budget (CPU time: the minutes on
   ``cores`` busy cores), in
   ``.venv-peers`` (a stopped run continues from its last checkpoint, ``last_checkpoint`` in
   the run folder names it);
3. ``tools/peers/<kind>_peer.py predict`` writes one label image per test image into
   ``<run>/predictions/<test dataset>/``;
4. the label images are scored by :class:`NucleiEvaluator` (every nucleus with score 1, as
   for the classical baseline): ``final_metrics.json`` and
   ``inference/<test dataset>/nuclei_per_image.json``, as our runs write them.
"""

import json
import logging
import os
import subprocess
import sys
import time

import tifffile
from detectron2.data import DatasetCatalog

from ...evaluation.nuclei_evaluator import NucleiEvaluator
from ...evaluation.run_records import write_final_metrics
from ...structures.label_image import label_image_to_instances
from .data import export_split

__all__ = [
    "PEER_KINDS",
    "PEERS_ENV_NAME",
    "PEERS_PYTHON_ENV",
    "DEFAULT_TRAIN_MINUTES",
    "PEER_PREFIX",
    "peer_kind",
    "check_peer_opts",
    "peer_train_command",
    "peers_python",
    "peer_script",
    "run_peer",
    "score_predictions",
]

logger = logging.getLogger(__name__)

# the checkout: the peers run from its tools/ and .venv-peers (they are not part of the installed package)
REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
# the peer each kind names, as the tables and final_metrics.json call it
PEER_KINDS = {"stardist": "StarDist 2D", "cellpose": "Cellpose 3"}
PEERS_ENV_NAME = ".venv-peers"
# another interpreter with the peers' packages, instead of <repo>/.venv-peers/bin/python
PEERS_PYTHON_ENV = "MASKRCNNPP_PEERS_PYTHON"
DEFAULT_TRAIN_MINUTES = 60.0
# a comparison row ``--model NAME=peer:KIND`` and the overrides it takes (tools/train_peer.py's options)
PEER_PREFIX = "peer:"
PEER_OPTS = {
    "TRAIN_MINUTES": "--minutes",
    "DATASETS.TRAIN": "--train-dataset",
    "DATASETS.TEST": "--test-dataset",
}


class PeersNotInstalled(RuntimeError):
    """The peers' environment is missing: the message says how to make it."""


def peers_python():
    """The interpreter of the peers' environment; raises :class:`PeersNotInstalled`."""
    python = os.environ.get(PEERS_PYTHON_ENV) or os.path.join(
        REPO_ROOT, PEERS_ENV_NAME, "bin", "python"
    )
    if not os.path.isfile(python):
        raise PeersNotInstalled(
            f"the peers' environment is missing ({python}): make it with "
            "`bash tools/setup_env.sh --peers`"
        )
    return python


def peer_script(kind):
    """``tools/peers/<kind>_peer.py`` of this checkout."""
    if kind not in PEER_KINDS:
        raise ValueError(f"unknown peer '{kind}'; peers: {', '.join(PEER_KINDS)}")
    return os.path.join(REPO_ROOT, "tools", "peers", f"{kind}_peer.py")


def peer_kind(config_file):
    """``"stardist"`` for ``"peer:stardist"``; None for a config file."""
    if not isinstance(config_file, str) or not config_file.startswith(PEER_PREFIX):
        return None
    kind = config_file[len(PEER_PREFIX) :]
    if kind not in PEER_KINDS:
        raise ValueError(
            f"{config_file}: unknown peer '{kind}'; peers: "
            f"{', '.join(PEER_PREFIX + k for k in PEER_KINDS)}"
        )
    return kind


def check_peer_opts(opts, where):
    """A peer row's KEY VALUE overrides: only the keys of :data:`PEER_OPTS`."""
    for key in opts[::2]:
        if key not in PEER_OPTS:
            raise ValueError(
                f"{where}: a peer takes only the overrides {', '.join(PEER_OPTS)}; got {key}"
            )


def peer_train_command(kind, opts, *, seed, output_dir, resume):
    """The ``tools/train_peer.py`` command of one (peer, seed) run of a comparison."""
    command = [
        sys.executable,
        os.path.join(REPO_ROOT, "tools", "train_peer.py"),
        "--peer",
        kind,
        "--seed",
        str(seed),
    ]
    for key, value in zip(opts[::2], opts[1::2]):
        command += [PEER_OPTS[key], value]
    # the run folder last, as in train_net.py's commands (OUTPUT_DIR)
    return command + (["--resume"] if resume else []) + ["--output-dir", output_dir]


def _run(command, what):
    logger.info("%s: %s", what, " ".join(command))
    sys.stdout.flush()
    returncode = subprocess.run(command).returncode
    if returncode != 0:
        raise RuntimeError(f"{what} exited with status {returncode}: {' '.join(command)}")


def score_predictions(dataset_name, predictions_dir, index, output_dir, *, method):
    """
    Score the label images ``predictions_dir/<k>.tif`` of an exported split against the
    dataset's ground truth with :class:`NucleiEvaluator`; writes ``final_metrics.json`` and
    ``inference/<dataset>/nuclei_per_image.json`` into ``output_dir``.

    Args:
        index (dict): the exported split's ``index.json`` (image ``k`` -> image id).
        method (str): what predicted them, for ``final_metrics.json``.

    Returns:
        dict: ``{"nuclei": {...}}``.
    """
    records = DatasetCatalog.get(dataset_name)
    if sorted(r["image_id"] for r in records) != sorted(e["image_id"] for e in index["images"]):
        raise ValueError(
            f"{predictions_dir}: the predictions are for other images than "
            f"the dataset '{dataset_name}' has now"
        )
    evaluator = NucleiEvaluator(
        dataset_name,
        score_thresh=0.5,
        output_dir=os.path.join(output_dir, "inference", dataset_name),
    )
    evaluator.reset()
    for entry in index["images"]:
        name = os.path.splitext(os.path.basename(entry["image"]))[0]
        path = os.path.join(predictions_dir, f"{name}.tif")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no prediction for image {entry['file_name']}")
        labels = tifffile.imread(path)
        evaluator.process(
            [{"image_id": entry["image_id"]}], [{"instances": label_image_to_instances(labels)}]
        )
    results = dict(evaluator.evaluate())
    write_final_metrics(output_dir, {dataset_name: results}, method=method)
    return results


def run_peer(
    kind,
    output_dir,
    *,
    seed,
    minutes=DEFAULT_TRAIN_MINUTES,
    cores=None,
    threads,
    train_dataset="dsb2018_train",
    test_dataset="dsb2018_val",
    data_cache=None,
    resume=False,
):
    """
    Train, predict and score one peer run (module docstring).

    Args:
        kind (str): a key of :data:`PEER_KINDS`.
        minutes (float): the training budget, ``minutes`` x ``cores`` CPU minutes of the
            peer's process (threshold optimisation and prediction come after it).
        cores (int or None): the cores of the budget, ``minutes`` x ``cores`` CPU minutes
            (default: this machine's CPU count, the cores our CPU recipes train on).
        threads (int): the peer's compute threads (TensorFlow's intra-op pool, torch's).
        data_cache (str or None): where the exported datasets are kept (default
            :func:`.data.default_cache_dir`).
        resume (bool): continue a stopped training; without it a run folder that holds one
            is refused.

    Returns:
        dict: ``{"nuclei": {...}}`` of the test dataset.
    """
    script = peer_script(kind)
    python = peers_python()
    if minutes <= 0:
        raise ValueError(f"--minutes must be > 0; got {minutes}")
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    cores = (os.cpu_count() or 1) if cores is None else cores
    if cores < 1:
        raise ValueError(f"--cores must be >= 1; got {cores}")
    for name in (train_dataset, test_dataset):
        if name not in DatasetCatalog.list():
            raise ValueError(f"dataset '{name}' is not registered")
    state_path = os.path.join(output_dir, "peer_state.json")
    if os.path.isfile(state_path) and not resume:
        raise ValueError(
            f"{output_dir} holds a started training ({state_path}): pass --resume "
            "to continue it, or choose another folder"
        )
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    train_data = export_split(train_dataset, data_cache, with_labels=True)
    test_data = export_split(test_dataset, data_cache, with_labels=False)
    common = ["--run-dir", output_dir, "--threads", str(threads)]
    _run(
        [
            python,
            script,
            "train",
            "--train-data",
            train_data,
            "--seed",
            str(seed),
            "--minutes",
            str(minutes),
            "--cores",
            str(cores),
            *common,
        ],
        f"{kind} training",
    )
    _run([python, script, "predict", "--data", test_data, *common], f"{kind} prediction")
    with open(os.path.join(test_data, "index.json")) as f:
        index = json.load(f)
    results = score_predictions(
        test_dataset,
        os.path.join(output_dir, "predictions", test_dataset),
        index,
        output_dir,
        method=f"{PEER_KINDS[kind]} ({os.path.relpath(script, REPO_ROOT)})",
    )
    logger.info(
        "%s seed %d on %s in %.0f s: %s",
        kind,
        seed,
        test_dataset,
        time.perf_counter() - start,
        results.get("nuclei"),
    )
    return results
