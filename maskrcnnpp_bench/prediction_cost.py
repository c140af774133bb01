"""
Suite "unetpp_predict": what a user of ``tools/predict.py`` waits for with a semantic UNet++.

For each ``TEST.PRECISION`` (float32, bfloat16) and the same model (the config's, random
weights seeded 0): the time of one network pass on a ``small`` x ``small`` image (the
model's own inference: normalisation, forward, probabilities) and the marginal time of a whole
``large`` x ``large`` image through :class:`~maskrcnnpp.inference.NucleiPredictor` (the model,
plus tiling if the image is tiled, plus the nuclei post-processing: what predict spends per
image of a folder once the model is loaded), with the process's freed memory kept as
``tools/predict.py`` keeps it (:func:`~maskrcnnpp.utils.cpu_memory.keep_freed_memory`; set
``MALLOC_MMAP_MAX_=65536`` to measure glibc's default instead). All four are interleaved in
each round; every ratio is taken within a round against the float32 ``small`` pass and
summarised by its median.
Each record also counts the minor page faults of one more call (None where the OS has no
``resource`` module). The bfloat16 records also give how far their probabilities on the
``large`` image are from float32 (max and mean absolute difference, share of pixels with the
same class).
"""

from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.modeling import build_model

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp.inference.predictor import NucleiPredictor
from maskrcnnpp.utils.cpu_memory import keep_freed_memory

from .runner import RECORD_FIELDS, machine_info
from .timing import median_paired_ratio, summarize_seconds, time_interleaved

__all__ = ["semantic_prediction_records"]

PRECISIONS = ("float32", "bfloat16")


def _image(size: int, seed: int) -> np.ndarray:
    """A dark image with bright discs, roughly a fluorescence field, (size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(20, 5, (size, size)).clip(0, 255)
    for _ in range(size * size // 2000):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(5, 15)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(120, 230)
    return np.repeat(image.astype(np.uint8)[:, :, None], 3, axis=2)


def _minor_page_faults(function) -> Optional[int]:
    """The process's minor page faults during one more call of ``function``: pages the
    allocator had to take fresh from the system (module docstring of
    :mod:`maskrcnnpp.utils.cpu_memory`)."""
    if resource is None:
        return None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    function()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _probabilities(predictor: NucleiPredictor, image: np.ndarray) -> torch.Tensor:
    return predictor.run_model(image)["sem_seg"].float()


def semantic_prediction_records(
    config: str, *, small: int, large: int, rounds: int, warmup: int, device: str, opts=()
) -> List[Dict[str, object]]:
    """
    Args:
        config (str): a semantic UNet++ config (e.g. configs/DSB2018/unetpp_vgg.yaml).
        small, large (int): sides of the single-pass image and of the predicted image.
        rounds, warmup (int): timed and untimed rounds.
        device (str): "cpu" or "cuda".
        opts: more config overrides.

    Returns:
        list[dict]: one record per (precision, image): the network pass on the small image
        and the predicted large image, ``latency_ratio`` against the float32 small pass.
    """
    memory_kept = (
        keep_freed_memory()
    )  # for the rest of the process: the suites after it do not time
    cfg = setup_cfg(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, *map(str, opts)])
    torch.manual_seed(0)
    # random weights, which NucleiPredictor(cfg) would refuse: timing needs no trained model
    predictor = NucleiPredictor(cfg, model=build_model(cfg))
    small_image, large_image = _image(small, 1), _image(large, 2)
    predictors = {}
    for precision in PRECISIONS:
        cfg.defrost()
        cfg.TEST.PRECISION = precision
        predictors[precision] = NucleiPredictor(cfg, model=predictor.model)
    functions = {}
    for precision, p in predictors.items():
        functions[(precision, "pass")] = lambda p=p: p.run_model(small_image)
        functions[(precision, "image")] = lambda p=p: p(large_image)
    seconds = time_interleaved(functions, rounds=rounds, warmup=warmup, device=device)
    page_faults = {key: _minor_page_faults(function) for key, function in functions.items()}
    reference = seconds[("float32", "pass")]
    exact = _probabilities(predictors["float32"], large_image)
    records = []
    for (precision, kind), times in seconds.items():
        side = small if kind == "pass" else large
        notes = {
            "what": "one network pass (model inference)"
            if kind == "pass"
            else "one image through NucleiPredictor (marginal: model loaded)",
            "num_tiles": len(predictors[precision].tiles(side, side)) if kind == "image" else 1,
            "memory_kept": memory_kept,
            "minor_page_faults": page_faults[(precision, kind)],
        }
        if precision != "float32" and kind == "image":
            reduced = _probabilities(predictors[precision], large_image)
            diff = (reduced - exact).abs()
            notes.update(
                max_abs_prob_diff=round(diff.max().item(), 4),
                mean_abs_prob_diff=round(diff.mean().item(), 5),
                same_class_fraction=round(
                    (reduced.argmax(0) == exact.argmax(0)).float().mean().item(), 5
                ),
                speedup_vs_float32=round(median_paired_ratio(seconds[("float32", kind)], times), 2),
            )
        elif precision != "float32":
            notes["speedup_vs_float32"] = round(
                median_paired_ratio(seconds[("float32", kind)], times), 2
            )
        record = dict.fromkeys(RECORD_FIELDS)
        record.update(
            suite="unetpp_predict",
            model="UNet++ predict",
            variant=f"{precision} {'pass' if kind == 'pass' else 'image'}",
            height=side,
            width=side,
            batch=1,
            device=device,
            threads=torch.get_num_threads(),
            reference="UNet++ predict float32 pass",
            latency_ms=summarize_seconds(times),
            latency_ratio=median_paired_ratio(times, reference),
            notes=notes,
            machine=machine_info(),
        )
        records.append(record)
    return records
