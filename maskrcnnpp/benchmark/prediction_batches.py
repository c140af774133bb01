"""
Suite "predict_batch": images per second of ``tools/predict.py`` on a folder of real images,
one image (and tile) per model call against ``TEST.PREDICT.BATCH_SIZE`` > 1.

For each config (Mask R-CNN++ and UNet++; random weights seeded 0, shared by both settings):
:func:`~maskrcnnpp.inference.prediction_run.predict_to_folder` on the same image files with
a predictor of batch size 1 and one of ``batch_size``, interleaved in each round. A round is
the whole folder as a user runs it once the model is loaded: reading, prediction, and every
output file (label images, overlays, CSVs, COCO results). The batched record's
``latency_ratio`` is the median over rounds of its time over batch 1's within the round;
``notes.identical_outputs`` says whether the two runs wrote byte-identical label images,
measurement CSVs and COCO results.

A detector's cost grows with its number of detections, which random weights do not set:
``detections`` pins ``TEST.DETECTIONS_PER_IMAGE`` (random weights keep that many boxes on
every image; the notes give the mean number of nuclei written).
"""
import contextlib
import filecmp
import io
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import cv2
import torch

from ..engine.setup import setup_cfg
from ..inference.prediction_run import predict_to_folder
from ..inference.predictor import NucleiPredictor
from .runner import RECORD_FIELDS, machine_info
from .timing import median_paired_ratio, summarize_seconds, time_interleaved

__all__ = ["dsb2018_image_files", "batched_prediction_records"]


def dsb2018_image_files(dsb_root: str, num_images: int) -> List[str]:
    """
    Returns:
        list[str]: the image files of the first ``num_images`` ids of ``dsb_root``'s
        ``val.txt`` (Kaggle layout ``stage1_train/<id>/images/<id>.png``), or of the sorted
        ``stage1_train`` folders when there is no ``val.txt``.
    """
    split = os.path.join(dsb_root, "val.txt")
    if os.path.isfile(split):
        with open(split) as f:
            ids = [line.strip() for line in f if line.strip()]
    else:
        ids = sorted(os.listdir(os.path.join(dsb_root, "stage1_train")))
    return [os.path.join(dsb_root, "stage1_train", i, "images", f"{i}.png") for i in ids[:num_images]]


def _output_files(folder: str) -> List[str]:
    """The files that hold the nuclei (overlays follow from the label images)."""
    files = ["coco_instances_results.json", "coco_images.json"]
    for sub in ("labels", "measurements"):
        files += sorted(os.path.join(sub, f) for f in os.listdir(os.path.join(folder, sub)))
    return files


def _same_outputs(a: str, b: str) -> bool:
    files = _output_files(a)
    if files != _output_files(b):
        return False
    return all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in files)


def _model_name(cfg) -> str:
    if cfg.MODEL.META_ARCHITECTURE == "SemanticUNetPlusPlus":
        return "UNet++"
    return "Mask R-CNN++" if "nested" in cfg.MODEL.BACKBONE.NAME else "Mask R-CNN"


def batched_prediction_records(
    configs: Sequence[str],
    files: Sequence[str],
    *,
    batch_size: int,
    rounds: int,
    warmup: int,
    device: str,
    detections: Optional[int] = None,
    opts=(),
) -> List[Dict[str, object]]:
    """
    Args:
        configs (list[str]): model configs (e.g. configs/DSB2018/cpu/mask_rcnn_R_18_NestedFPN.yaml
            and configs/DSB2018/unetpp_vgg.yaml).
        files (list[str]): the images, predicted as one folder.
        batch_size (int): ``TEST.PREDICT.BATCH_SIZE`` of the batched setting (> 1).
        rounds, warmup (int): timed and untimed rounds over the folder (warm-up rounds
            predict the first two images only).
        device (str): "cpu" or "cuda".
        detections (int): ``TEST.DETECTIONS_PER_IMAGE`` of instance models (None: the config's).
        opts: more config overrides.

    Returns:
        list[dict]: per config, batch size 1 (the reference) and ``batch_size``: seconds per
        folder, ``throughput`` (images, seconds, images_per_s of the median round),
        ``latency_ratio`` against batch 1.
    """
    records = []
    for config in configs:
        cfg = setup_cfg(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, *map(str, opts)])
        if detections is not None and cfg.MODEL.META_ARCHITECTURE != "SemanticUNetPlusPlus":
            cfg.defrost()
            cfg.TEST.DETECTIONS_PER_IMAGE = detections
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random scores: keep `detections`
            cfg.TEST.PREDICT.SCORE_THRESH = 0.0
            cfg.freeze()
        torch.manual_seed(0)
        model = NucleiPredictor(cfg).model
        predictors = {}
        for size in (1, batch_size):
            cfg.defrost()
            cfg.TEST.PREDICT.BATCH_SIZE = size
            predictors[size] = NucleiPredictor(cfg, model=model)
        scratch = tempfile.mkdtemp(prefix="predict_batch_")
        try:
            state = {"warm": True}  # warm-up rounds: the first two images

            def run(size):
                inputs = list(files[:2]) if state["warm"] else list(files)
                out = os.path.join(scratch, f"batch{size}")
                with contextlib.redirect_stdout(io.StringIO()):
                    status = predict_to_folder(cfg, inputs, out, overwrite=True, predictor=predictors[size])
                if status != 0:
                    raise RuntimeError(f"predict_to_folder returned {status} on {config}")

            for _ in range(warmup):
                for size in predictors:
                    run(size)
            state["warm"] = False
            seconds = time_interleaved({s: (lambda s=s: run(s)) for s in predictors}, rounds=rounds,
                                       warmup=0, device=device)  # fmt: skip
            identical = _same_outputs(os.path.join(scratch, "batch1"), os.path.join(scratch, f"batch{batch_size}"))
            with open(os.path.join(scratch, "batch1", "coco_instances_results.json")) as f:
                num_nuclei = len(json.load(f))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        sizes = sorted({(h, w) for h, w in _image_sizes(files)})
        for size, times in seconds.items():
            median = summarize_seconds(times)["median"] / 1000.0
            record = dict.fromkeys(RECORD_FIELDS)
            record.update(
                suite="predict_batch",
                model=_model_name(cfg),
                variant=f"batch {size}",
                batch=size,
                device=device,
                threads=torch.get_num_threads(),
                reference=f"{_model_name(cfg)} batch 1",
                latency_ms=summarize_seconds(times),
                latency_ratio=median_paired_ratio(times, seconds[1]),
                throughput={"images": len(files), "seconds": round(median, 3),
                            "images_per_s": round(len(files) / median, 4)},  # fmt: skip
                notes={
                    "what": "tools/predict.py on the folder, model loaded: read, predict, write",
                    "config": os.path.relpath(config),
                    "weights": "random (seed 0)",
                    "detections_per_image": detections if cfg.MODEL.META_ARCHITECTURE != "SemanticUNetPlusPlus" else None,
                    "mean_nuclei_per_image": round(num_nuclei / len(files), 2),
                    "image_sizes": [f"{h}x{w}" for h, w in sizes],
                    "identical_outputs": identical,
                    "speedup_vs_batch1": round(median_paired_ratio(seconds[1], times), 3),
                },
                machine=machine_info(),
            )
            records.append(record)
    return records


def _image_sizes(files):
    for path in files:
        yield cv2.imread(path, cv2.IMREAD_UNCHANGED).shape[:2]
