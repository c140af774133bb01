"""
What the peer scripts (``stardist_peer.py``, ``cellpose_peer.py``) share. They run in
``.venv-peers`` (``bash tools/setup_env.sh --peers``), which has no Detectron2 and no
maskrcnnpp: everything here uses NumPy, tifffile and the standard library only.

The images come from a folder written by ``maskrcnnpp.comparison.peers.data.export_split`` (the
registered dataset's own images and instance masks)::

    <folder>/index.json        {"dataset": name, "images": [{"image_id", "image", "labels"}]}
    <folder>/images/<k>.tif    (H, W, 3) uint8 RGB
    <folder>/labels/<k>.tif    (H, W) int32 label image, 0 the background (training splits)

A run folder holds ``peer_state.json`` (the training's progress, rewritten at every
checkpoint), ``last_checkpoint`` (written with every checkpoint, so that the comparison sees a
stopped run) and ``predictions/<dataset>/<k>.tif``, the (H, W) int32 label image predicted for
image ``k`` of the index.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import tifffile

STATE_NAME = "peer_state.json"
LAST_CHECKPOINT_NAME = "last_checkpoint"
PREDICTIONS_DIRNAME = "predictions"


def fail(message):
    """One line on stderr naming what is at fault; exit status 2 (nothing could run)."""
    print(f"{os.path.basename(sys.argv[0])}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def read_index(folder):
    """The ``index.json`` of an exported split, checked."""
    path = os.path.join(folder, "index.json")
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: cannot read the exported split ({e})")
    if (
        not isinstance(index, dict)
        or not isinstance(index.get("images"), list)
        or not index["images"]
    ):
        fail(f"{path}: expected {{'dataset': name, 'images': [...]}} with at least one image")
    return index


def load_split(folder, *, with_labels):
    """
    Returns:
        (index, images, labels): the index dict, a list of (H, W, 3) uint8 arrays and a list
        of (H, W) int32 label images (None without ``with_labels``).
    """
    index = read_index(folder)
    images, labels = [], []
    for entry in index["images"]:
        image = tifffile.imread(os.path.join(folder, entry["image"]))
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            fail(
                f"{entry['image']} in {folder}: expected (H, W, 3) uint8; got {image.shape} {image.dtype}"
            )
        images.append(image)
        if with_labels:
            if not entry.get("labels"):
                fail(f"{folder}/index.json: image {entry['image_id']} has no label image")
            labels.append(tifffile.imread(os.path.join(folder, entry["labels"])).astype(np.int32))
    return index, images, (labels if with_labels else None)


def write_json_atomic(path, content):
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(content, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def read_state(run_dir):
    """The run's ``peer_state.json``, or None when it has none."""
    path = os.path.join(run_dir, STATE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_checkpoint_state(run_dir, state, checkpoint):
    """Write ``peer_state.json``, then ``last_checkpoint`` naming ``checkpoint`` (its mtime is
    the time of the newest checkpoint, which the comparison's run records read)."""
    write_json_atomic(os.path.join(run_dir, STATE_NAME), state)
    temporary = os.path.join(run_dir, f"{LAST_CHECKPOINT_NAME}.tmp{os.getpid()}")
    with open(temporary, "w") as f:
        f.write(checkpoint)
    os.replace(temporary, os.path.join(run_dir, LAST_CHECKPOINT_NAME))


class ComputeBudget:
    """
    The training budget in CPU time, kept across attempts: ``minutes`` x ``cores`` x 60
    seconds of this process's CPU time (all its threads, counted from the start of the script,
    data loading included), the earlier attempts' CPU seconds (recorded in
    ``peer_state.json``) included. CPU time, not wall time, so that a peer gets the compute of
    ``minutes`` on ``cores`` busy cores whatever else the machine runs meanwhile and however
    many threads it uses; our CPU recipes' ``minutes`` of wall time on ``cores`` cores used at
    most as much.
    """

    def __init__(self, minutes, cores, spent_before):
        self.seconds = 60.0 * float(minutes) * int(cores)
        self.spent_before = float(spent_before)

    def spent(self):
        return self.spent_before + time.process_time()

    def left(self):
        return self.seconds - self.spent()

    def exhausted(self):
        return self.left() <= 0.0


def write_label_image(path, labels):
    """Atomically write an (H, W) label image as int32 TIFF."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}.tif"
    tifffile.imwrite(temporary, np.ascontiguousarray(labels, dtype=np.int32), compression="zlib")
    os.replace(temporary, path)


def consecutive_labels(labels):
    """(H, W) integer labels -> int32 labels 1..N in increasing order of the old label."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lookup = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lookup[labels]


def predict_split(folder, run_dir, predict_labels):
    """
    Predict every image of an exported split into ``<run>/predictions/<dataset>/<k>.tif``.

    Args:
        predict_labels: ``(H, W, 3) uint8 -> (H, W)`` integer label image.

    Returns:
        dict: "dataset", "num_images", "seconds" (prediction only, reading and writing left out).
    """
    index = read_index(folder)
    out_dir = os.path.join(run_dir, PREDICTIONS_DIRNAME, index["dataset"])
    seconds = 0.0
    for entry in index["images"]:
        image = tifffile.imread(os.path.join(folder, entry["image"]))
        start = time.perf_counter()
        labels = consecutive_labels(predict_labels(image))
        seconds += time.perf_counter() - start
        if labels.shape != image.shape[:2]:
            fail(
                f"{entry['image']}: predicted labels of shape {labels.shape} for an image of "
                f"shape {image.shape[:2]}"
            )
        name = os.path.splitext(os.path.basename(entry["image"]))[0]
        write_label_image(os.path.join(out_dir, f"{name}.tif"), labels)
    return {"dataset": index["dataset"], "num_images": len(index["images"]), "seconds": seconds}


def serve(predict_labels):
    """
    The speed benchmark's worker loop (``maskrcnnpp_bench.peer_speed``): one JSON request
    a line on stdin, answered by one JSON line on stdout; an empty line or EOF ends it.

    - ``{"load": path}``: read an (H, W, 3) uint8 TIFF into memory; answers ``{"loaded": [H, W]}``;
    - ``{"predict": path}``: predict a loaded image; answers ``{"num_instances": N}``.

    The model is loaded once, before ``{"ready": true}`` is printed.
    """
    images = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        if "load" in request:
            images[request["load"]] = tifffile.imread(request["load"])
            answer = {"loaded": list(images[request["load"]].shape[:2])}
        else:
            labels = predict_labels(images[request["predict"]])
            answer = {"num_instances": int(len(np.unique(labels)) - 1)}
        print(json.dumps(answer), flush=True)


def build_parser(description):
    """The command line both peer scripts take."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from scratch (or resume) within the budget")
    train.add_argument("--train-data", required=True, help="exported training split")
    train.add_argument("--run-dir", required=True)
    train.add_argument("--seed", type=int, required=True)
    train.add_argument(
        "--minutes",
        type=float,
        required=True,
        help="training budget: minutes on --cores busy cores, counted in CPU time",
    )
    train.add_argument("--cores", type=int, required=True, help="the cores of the budget")
    train.add_argument("--threads", type=int, required=True)
    predict = sub.add_parser("predict", help="label images of an exported split")
    predict.add_argument("--data", required=True, help="exported split to predict")
    predict.add_argument("--run-dir", required=True)
    predict.add_argument("--threads", type=int, required=True)
    serve_parser = sub.add_parser("serve", help="benchmark worker: predict images named on stdin")
    serve_parser.add_argument("--run-dir", required=True)
    serve_parser.add_argument("--threads", type=int, required=True)
    return parser


def check_args(args):
    if args.threads < 1:
        fail(f"--threads must be >= 1; got {args.threads}")
    if getattr(args, "minutes", 1.0) <= 0:
        fail(f"--minutes must be > 0; got {args.minutes}")
    for name in ("train_data", "data"):
        folder = getattr(args, name, None)
        if folder is not None and not os.path.isfile(os.path.join(folder, "index.json")):
            fail(f"--{name.replace('_', '-')} {folder}: no index.json (not an exported split)")
    if args.command in ("predict", "serve") and not os.path.isdir(args.run_dir):
        fail(f"--run-dir {args.run_dir}: no such folder (train first)")


def main(description, train, load_predictor):
    """
    The command line of a peer's script: ``train`` (``train(args)``), ``predict`` (the
    predictions of a split by ``load_predictor(run_dir, threads)``) or ``serve`` (the same
    predictor for the speed benchmark). Returns the exit status.
    """
    args = build_parser(description).parse_args()
    check_args(args)
    if args.command == "train":
        train(args)
    elif args.command == "predict":
        print(predict_split(args.data, args.run_dir, load_predictor(args.run_dir, args.threads)))
    else:
        serve(load_predictor(args.run_dir, args.threads))
    return 0
