"""
Prediction speed of our models and the peers side by side, in one run (``tools/benchmark_peers.py``):

- latency: one 512x512 and one 1024x1024 image (the test dataset's largest image, centre-cropped,
  or mirror-padded where it is smaller), ``rounds`` timed rounds after ``warmup`` untimed ones,
  the models interleaved in an order rotated every round (:func:`time_interleaved`); median
  and quartiles, and the median over rounds of each model's time over the reference's;
- throughput: every image of the test dataset once, the models interleaved image by image;
  images per second and the total time over the reference's.

What is timed: from the decoded (H, W, 3) uint8 RGB image in memory to the (H, W) label image,
normalisation, the network, post-processing (our mask paste and tiling; StarDist's NMS;
Cellpose's flow dynamics) included; reading and writing files left out. Where an instance
model of ours spends the time of the largest image, stage by stage, is measured after the
timed rounds, with hooks on (:func:`profile_instance_prediction`). Our models run in
this process (:class:`NucleiPredictor`, ``torch.set_num_threads(threads)``); each peer in a
worker of ``.venv-peers`` (``tools/peers/<kind>_peer.py serve``) that holds its model and the
images in memory, with the same thread count (OMP_NUM_THREADS, TensorFlow's intra-op pool,
torch's); the pipe's round trip (well under a millisecond) is inside the peers' times.
"""

import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import OrderedDict

import numpy as np
import tifffile
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling.meta_arch import rcnn

from maskrcnnpp.comparison.peers.runs import peer_script, peers_python
from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.data.image_io import read_image_rgb
from maskrcnnpp.inference.predictor import NucleiPredictor
from maskrcnnpp.utils.atomic_io import atomic_open

from .module_profile import ComponentTimer
from .runner import machine_info
from .timing import median_paired_ratio, summarize_seconds, time_interleaved

__all__ = [
    "OurModel",
    "PeerWorker",
    "square_image",
    "profile_instance_prediction",
    "run_peer_speed",
    "format_peer_speed",
    "write_peer_speed",
]

logger = logging.getLogger(__name__)


class OurModel:
    """One of our models in this process: ``predict(key)`` predicts a loaded image."""

    def __init__(self, name, config_file, opts=()):
        self.name = name
        cfg = setup_cfg(config_file, ["MODEL.DEVICE", "cpu", *map(str, opts)])
        self.predictor = NucleiPredictor(cfg)
        self.images = {}

    def load(self, key, image):
        self.images[key] = image

    def predict(self, key):
        self.predictor(self.images[key])

    def close(self):
        pass


class PeerWorker:
    """A peer's run folder served by ``tools/peers/<kind>_peer.py serve`` in .venv-peers."""

    def __init__(self, name, run_dir, threads):
        state_path = os.path.join(run_dir, "peer_state.json")
        if not os.path.isfile(state_path):
            raise FileNotFoundError(
                f"{state_path}: not a peer run folder (tools/train_peer.py makes them)"
            )
        with open(state_path) as f:
            kind = json.load(f)["peer"]
        self.name = name
        command = [
            peers_python(),
            peer_script(kind),
            "serve",
            "--run-dir",
            run_dir,
            "--threads",
            str(threads),
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._answer(f"{kind} worker for {run_dir}")
        self.folder = tempfile.mkdtemp(prefix=f"peer_speed_{name}_")
        self.images = {}

    def _answer(self, what):
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name}: the {what} ended (status {self.process.wait()})")
            if line.startswith("{"):  # the libraries print lines of their own
                return json.loads(line)

    def _ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer("worker")

    def load(self, key, image):
        path = os.path.join(self.folder, f"{key}.tif")
        tifffile.imwrite(path, image)
        self._ask({"load": path})
        self.images[key] = path

    def predict(self, key):
        self._ask({"predict": self.images[key]})

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def square_image(image, side):
    """The centred ``side`` x ``side`` crop of an (H, W, 3) image, mirror-padded where smaller."""
    height, width = image.shape[:2]
    pad_y, pad_x = max(0, side - height), max(0, side - width)
    if pad_y or pad_x:
        image = np.pad(
            image,
            ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)),
            mode="symmetric",
        )
    top = (image.shape[0] - side) // 2
    left = (image.shape[1] - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


# the modules of a GeneralizedRCNN whose forward time :func:`profile_instance_prediction` sums
_PREDICTION_MODULES = (
    ("RPN", r"proposal_generator"),
    ("ROI box head", r"roi_heads\.(box_pooler|box_head|box_predictor)"),
    ("ROI mask head", r"roi_heads\.(mask_pooler|mask_head)"),
    ("ROI heads", r"roi_heads"),
    ("model", r""),
)
# the stages of one prediction, in the order of the profile's table
PREDICTION_STAGES = (
    "resize and tensor (predictor)",
    "backbone",
    "RPN",
    "ROI box head",
    "ROI mask head",
    "ROI heads rest (box NMS, caps)",
    "mask paste at image size (detector_postprocess)",
    "model rest (normalisation, padding)",
    "post-processing (mask crops, tile merge, label image)",
    "total",
)


def _prediction_stages(elapsed, total):
    """Seconds of :data:`PREDICTION_STAGES` from one prediction's hook sums."""
    get = elapsed.get
    return {
        "resize and tensor (predictor)": get("run_model", 0.0) - get("model", 0.0),
        "backbone": get("backbone", 0.0),
        "RPN": get("RPN", 0.0),
        "ROI box head": get("ROI box head", 0.0),
        "ROI mask head": get("ROI mask head", 0.0),
        "ROI heads rest (box NMS, caps)": get("ROI heads", 0.0)
        - get("ROI box head", 0.0)
        - get("ROI mask head", 0.0),
        "mask paste at image size (detector_postprocess)": get("paste", 0.0),
        "model rest (normalisation, padding)": get("model", 0.0)
        - get("backbone", 0.0)
        - get("RPN", 0.0)
        - get("ROI heads", 0.0)
        - get("paste", 0.0),
        "post-processing (mask crops, tile merge, label image)": total - get("run_model", 0.0),
        "total": total,
    }


def profile_instance_prediction(model, key, *, rounds, warmup):
    """
    Where one of our instance models spends a prediction of a loaded image, stage by stage
    (:data:`PREDICTION_STAGES`): forward hooks on the network's modules, and timed wrappers
    around :meth:`NucleiPredictor.run_model` and Detectron2's ``detector_postprocess`` (which
    pastes every mask at the image size), removed afterwards. ``warmup`` untimed rounds, then
    ``rounds`` timed ones.

    Args:
        model (OurModel): with the image ``key`` loaded.

    Returns:
        dict or None: ``{"ms": {stage: median ms}, "nuclei": N, "tiles": T}``; None for a model
        without ROI heads (a semantic model).
    """
    predictor = model.predictor
    network = predictor.model
    if not hasattr(network, "roi_heads"):
        return None
    timer = ComponentTimer(network, "cpu", _PREDICTION_MODULES)
    elapsed = timer.elapsed

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed[name] = elapsed.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    paste = rcnn.detector_postprocess
    predictor.run_model = timed("run_model", predictor.run_model)
    rcnn.detector_postprocess = timed("paste", paste)
    per_round = []
    try:
        for k in range(warmup + rounds):
            elapsed.clear()
            start = time.perf_counter()
            prediction = predictor(model.images[key])
            total = time.perf_counter() - start
            if k >= warmup:
                per_round.append(_prediction_stages(elapsed, total))
    finally:
        timer.remove()
        del predictor.run_model
        rcnn.detector_postprocess = paste
    return {
        "ms": {
            stage: 1000 * statistics.median(r[stage] for r in per_round)
            for stage in PREDICTION_STAGES
        },
        "nuclei": int(len(prediction.scores)),
        "tiles": int(prediction.num_tiles),
    }


def run_peer_speed(
    ours,
    peers,
    *,
    dataset,
    threads,
    rounds=5,
    warmup=1,
    num_images=None,
    reference=None,
    sides=(512, 1024),
):
    """
    Args:
        ours (list[(name, config_file, opts)]): our models.
        peers (list[(name, run_dir)]): peer run folders (tools/train_peer.py).
        dataset (str): the registered test dataset (throughput; the latency images come from
            its largest image).
        threads (int): every model's compute threads.
        num_images (int or None): the first N images of the dataset for the throughput.
        reference (str or None): the model of the ratios; default the first peer, else the
            first model.

    Returns:
        dict: the content of ``peer_speed.json``.
    """
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    records = DatasetCatalog.get(dataset)[:num_images]
    if not records:
        raise ValueError(f"dataset '{dataset}' has no images")
    torch.set_num_threads(threads)
    models = OrderedDict()
    try:
        for name, run_dir in peers:
            models[name] = PeerWorker(name, run_dir, threads)
        for name, config_file, opts in ours:
            models[name] = OurModel(name, config_file, opts)
        reference = reference or next(iter(models))
        if reference not in models:
            raise ValueError(f"--reference {reference}: no such model; models: {list(models)}")
        images = [read_image_rgb(r["file_name"]) for r in records]
        largest = max(images, key=lambda image: image.shape[0] * image.shape[1])
        for side in sides:
            for model in models.values():
                model.load(f"side{side}", square_image(largest, side))
        for k, image in enumerate(images):
            for model in models.values():
                model.load(f"image{k}", image)
        latency = OrderedDict()
        for side in sides:
            logger.info("timing %dx%d: %d rounds after %d warm-up", side, side, rounds, warmup)
            seconds = time_interleaved(
                {
                    name: (lambda m=m, key=f"side{side}": m.predict(key))
                    for name, m in models.items()
                },
                rounds=rounds,
                warmup=warmup,
                device="cpu",
            )
            latency[str(side)] = OrderedDict(
                (
                    name,
                    {
                        "ms": summarize_seconds(times),
                        "ratio_to_reference": median_paired_ratio(times, seconds[reference]),
                    },
                )
                for name, times in seconds.items()
            )
        logger.info("throughput over %d images of %s", len(images), dataset)
        totals = dict.fromkeys(models, 0.0)
        names = list(models)
        for k in range(len(images)):
            shift = k % len(names)  # rotated, as in the latency rounds
            order = names[shift:] + names[:shift]
            seconds = time_interleaved(
                {name: (lambda m=models[name], key=f"image{k}": m.predict(key)) for name in order},
                rounds=1,
                warmup=0,
                device="cpu",
            )
            for name, times in seconds.items():
                totals[name] += times[0]
        profile_side = max(sides)
        logger.info(
            "where our instance models spend a %dx%d prediction", profile_side, profile_side
        )
        profiles = OrderedDict()
        for name, model in models.items():
            if isinstance(model, OurModel):
                profile = profile_instance_prediction(
                    model, f"side{profile_side}", rounds=rounds, warmup=warmup
                )
                if profile is not None:
                    profiles[name] = profile
    finally:
        for model in models.values():
            model.close()
    throughput = OrderedDict(
        (
            name,
            {
                "seconds": total,
                "images_per_second": len(images) / total,
                "ratio_to_reference": total / totals[reference],
            },
        )
        for name, total in totals.items()
    )
    return OrderedDict(
        what="prediction from the decoded image in memory to the label image (module docstring of "
        "maskrcnnpp_bench.peer_speed)",
        dataset=dataset,
        num_images=len(images),
        threads=threads,
        rounds=rounds,
        warmup=warmup,
        reference=reference,
        models={
            name: ("peer" if isinstance(m, PeerWorker) else "ours") for name, m in models.items()
        },
        latency=latency,
        throughput=throughput,
        profile=OrderedDict(side=profile_side, models=profiles),
        machine=machine_info(),
    )


def format_peer_speed(result):
    """The Markdown table of :func:`run_peer_speed`'s result."""
    sides = list(result["latency"])
    reference = result["reference"]
    header = (
        ["model"]
        + [f"{s}x{s} ms (median [q1, q3])" for s in sides]
        + [f"{s}x{s} / {reference}" for s in sides]
    )
    header += [f"images/s over {result['num_images']}", f"total s / {reference}"]
    lines = [
        f"# Prediction speed, {result['threads']} threads, {result['rounds']} rounds",
        "",
        f"Timed: {result['what']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|:---|" + "---:|" * (len(header) - 1),
    ]
    for name in result["models"]:
        cells = [name]
        for side in sides:
            ms = result["latency"][side][name]["ms"]
            cells.append(f"{ms['median']:.0f} [{ms['q1']:.0f}, {ms['q3']:.0f}]")
        cells += [f"{result['latency'][side][name]['ratio_to_reference']:.2f}" for side in sides]
        throughput = result["throughput"][name]
        cells += [
            f"{throughput['images_per_second']:.2f}",
            f"{throughput['ratio_to_reference']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    profiles = result.get("profile", {}).get("models", {})
    if profiles:
        side = result["profile"]["side"]
        names = list(profiles)
        lines += [
            "",
            f"## Where our instance models spend a {side}x{side} prediction",
            "",
            "Median ms over the rounds, with hooks on (their totals are a little above the "
            "untimed-hook latency); "
            + ", ".join(
                f"{n}: {profiles[n]['nuclei']} nuclei, {profiles[n]['tiles']} tile(s)"
                for n in names
            )
            + ".",
            "",
            "| stage | " + " | ".join(f"{n} ms | {n} %" for n in names) + " |",
            "|:---|" + "---:|---:|" * len(names),
        ]
        for stage in PREDICTION_STAGES:
            cells = [stage]
            for n in names:
                ms = profiles[n]["ms"]
                cells += [f"{ms[stage]:.0f}", f"{100 * ms[stage] / ms['total']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_peer_speed(result, output_dir):
    """``peer_speed.json`` and ``peer_speed.md`` in ``output_dir``."""
    with atomic_open(os.path.join(output_dir, "peer_speed.json"), "w") as f:
        json.dump(result, f, indent=2)
    with atomic_open(os.path.join(output_dir, "peer_speed.md"), "w") as f:
        f.write(format_peer_speed(result))
