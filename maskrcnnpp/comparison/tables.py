"""
Compare models over seeds: train each (model, seed) (:mod:`.runs`), gather the
runs' ``final_metrics.json`` and per-image nuclei statistics, add the classical floor, and
write ``comparison.md``, ``comparison.json`` and ``comparison.png`` into the output root.

Statistics, stated in every output:

- per model and metric: mean and **sample** standard deviation (``ddof=1``) over seeds (no
  standard deviation with one seed; 0 for the deterministic classical baseline);
- per pair (A, B): the **paired per-image difference B - A** of the DSB score and the
  foreground IoU, each image's value first **averaged over the seeds** of each model; the
  mean over images with a **percentile bootstrap 95 % CI** (images resampled with replacement,
  a fixed number of resamples from a fixed seed).

Runs are grouped by the images they were evaluated on: a semantic dataset (metadata
``instance_dataset_name``) counts as the images of its instance twin, so Mask R-CNN on
``dsb2018_val`` and UNet++ on ``dsb2018_sem_seg_val`` share a table. Runs evaluated on
different images are refused.
"""

import json
import logging
import os
from collections import OrderedDict

import numpy as np
from detectron2.data import MetadataCatalog

from ..evaluation.classical_baseline import CLASSICAL_BASELINE_NAME, evaluate_classical_baseline
from ..evaluation.nuclei_metrics import summarize_nuclei_stats
from ..evaluation.run_records import (
    has_final_metrics,
    per_image_path,
    read_final_metrics,
    read_per_image_stats,
    read_run_record,
)
from ..utils.atomic_io import atomic_open
from ..utils.output_folder import check_writable_folder
from .runs import plan_runs, run_status, train_runs, train_seconds

__all__ = [
    "COMPARISON_METRICS",
    "BASELINE_KEY",
    "mean_and_sd",
    "paired_bootstrap",
    "collect_model_results",
    "summarize_comparison",
    "format_comparison_markdown",
    "run_comparison",
]

logger = logging.getLogger(__name__)

# (task, key in Detectron2's results, column title, decimals)
COMPARISON_METRICS = (
    ("segm", "AP", "segm AP", 2),
    ("segm", "AP50", "AP50", 2),
    ("segm", "AP75", "AP75", 2),
    ("nuclei", "iou", "fg IoU", 4),
    ("nuclei", "iou_pooled", "fg IoU pooled", 4),
    ("nuclei", "dice", "Dice", 4),
    ("nuclei", "dsb_score", "DSB", 4),
    ("nuclei", "aji", "AJI", 4),
    ("nuclei", "pq", "PQ", 4),
    # from the per-image records (collect_run), so that records older than the key have it too
    ("nuclei", "accuracy_iou50_pooled", "TP/(TP+FP+FN) IoU 0.5 pooled", 4),
)
# per-image keys of nuclei_per_image.json compared in pairs, with their titles
PAIRED_METRICS = (("dsb_score", "DSB"), ("iou", "fg IoU"))
BASELINE_KEY = "classical"
SD_NOTE = "sample standard deviation over seeds (ddof=1)"


def _metric_name(task, key):
    return f"{task}/{key}"


def mean_and_sd(values):
    """
    Args:
        values (list[float]): one number per seed.

    Returns:
        (mean, sd): floats; sd is the sample standard deviation (ddof=1), None for fewer than
        two values; (None, None) for no values.
    """
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if values.size == 0:
        return None, None
    sd = float(np.std(values, ddof=1)) if values.size > 1 else None
    return float(values.mean()), sd


def paired_bootstrap(differences, *, resamples=10000, seed=0, confidence=0.95):
    """
    Percentile bootstrap of the mean of paired differences.

    Args:
        differences (array): (N,) one difference per image.
        resamples (int): bootstrap resamples of the N images (with replacement).
        seed (int): seed of ``numpy.random.default_rng``.
        confidence (float): coverage of the interval.

    Returns:
        dict: "mean", "ci_low", "ci_high" (float), "num_images" (int), "resamples", "seed".
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or differences.size == 0:
        raise ValueError(
            f"paired_bootstrap: expected (N,) differences with N > 0; got shape {differences.shape}"
        )
    if resamples < 1:
        raise ValueError(f"paired_bootstrap: resamples must be >= 1; got {resamples}")
    rng = np.random.default_rng(seed)
    n = differences.size
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // n)  # bounded memory for large N
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return {
        "mean": float(differences.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "num_images": int(n),
        "resamples": int(resamples),
        "seed": int(seed),
    }


def _images_of(dataset_name):
    """The dataset whose images (and image ids) ``dataset_name`` is scored on."""
    return MetadataCatalog.get(dataset_name).get("instance_dataset_name", dataset_name)


def _paired_per_image(per_image, path):
    """
    Args:
        per_image (list[dict]): a run's per-image nuclei statistics, read from ``path``.

    Returns:
        (per_image, pooled_accuracy): {image_id: {paired metric: value}} and TP / (TP + FP + FN)
        at IoU 0.5 pooled over the images (:func:`summarize_nuclei_stats`'s
        ``accuracy_iou50_pooled``), None when an entry lacks the counts it needs.
    """
    out = OrderedDict()
    for index, stats in enumerate(per_image):
        missing = [k for k in ("image_id",) + tuple(k for k, _ in PAIRED_METRICS) if k not in stats]
        if missing:
            raise ValueError(f"{path}: entry {index} lacks {missing}")
        out[stats["image_id"]] = {k: float(stats[k]) for k, _ in PAIRED_METRICS}
    counts = (
        "num_gt",
        "num_pred",
        "num_matched",
        "fg_intersection",
        "fg_union",
        "fg_gt_area",
        "fg_pred_area",
        "iou",
        "dice",
        "dsb_score",
        "aji",
        "pq",
    )
    complete = per_image and all(all(k in stats for k in counts) for stats in per_image)
    pooled = summarize_nuclei_stats(per_image)["accuracy_iou50_pooled"] if complete else None
    return out, pooled


def collect_run(output_dir):
    """
    Args:
        output_dir (str): a finished run folder.

    Returns:
        dict: "output_dir", "train_seconds" (float or None when the folder has no
        ``compare_run.json``), "datasets": {dataset evaluated: {"metrics": {task/key: value},
        "per_image": {image_id: {"dsb_score", "iou"}} or None}}.
    """
    results = read_final_metrics(output_dir)["results"]
    datasets = OrderedDict()
    for dataset, result in results.items():
        metrics = {}
        for task, key, _, _ in COMPARISON_METRICS:
            value = result.get(task, {}).get(key) if isinstance(result, dict) else None
            metrics[_metric_name(task, key)] = None if value is None else float(value)
        per_image = read_per_image_stats(output_dir, dataset)
        if per_image is not None:
            per_image, pooled = _paired_per_image(per_image, per_image_path(output_dir, dataset))
            if pooled is not None:
                metrics[_metric_name("nuclei", "accuracy_iou50_pooled")] = float(pooled)
        datasets[dataset] = {"metrics": metrics, "per_image": per_image}
    record = read_run_record(output_dir)
    seconds = None if record is None else train_seconds(record, output_dir)
    return {"output_dir": output_dir, "train_seconds": seconds, "datasets": datasets}


def collect_model_results(runs):
    """
    Args:
        runs (list[TrainingRun]): finished runs.

    Returns:
        OrderedDict: model name -> {"config_file", "opts", "runs": {seed: collect_run(...)}}.

    Raises:
        ValueError: when runs were evaluated on different images, naming each run's datasets.
    """
    models = OrderedDict()
    for run in runs:
        entry = models.setdefault(
            run.model.name,
            {"config_file": run.model.config_file, "opts": list(run.opts), "runs": OrderedDict()},
        )
        entry["runs"][run.seed] = collect_run(run.output_dir)
    evaluated = [
        (f"{name}/seed{seed}", tuple(sorted(collected["datasets"])))
        for name, entry in models.items()
        for seed, collected in entry["runs"].items()
    ]
    if len({tuple(sorted({_images_of(d) for d in datasets})) for _, datasets in evaluated}) > 1:
        described = "; ".join(f"{run} on {', '.join(datasets)}" for run, datasets in evaluated)
        raise ValueError(
            f"the runs were evaluated on different datasets, not comparable: {described}"
        )
    return models


def _model_summary(runs_by_seed, dataset_images):
    """Mean / sd per metric, training minutes and seed-averaged per-image values of one model."""
    evaluated = {}
    values = {name: [] for name in (_metric_name(t, k) for t, k, _, _ in COMPARISON_METRICS)}
    minutes = []
    per_image_by_seed = []
    for seed, collected in runs_by_seed.items():
        dataset = next(d for d in collected["datasets"] if _images_of(d) == dataset_images)
        evaluated[seed] = dataset
        result = collected["datasets"][dataset]
        for name, value in result["metrics"].items():
            values[name].append(value)
        if collected["train_seconds"] is not None:
            minutes.append(collected["train_seconds"] / 60.0)
        per_image_by_seed.append((seed, collected["output_dir"], dataset, result["per_image"]))
    names = sorted(set(evaluated.values()))
    summary = OrderedDict(
        evaluated_on=names[0] if len(names) == 1 else names,
        seeds=list(runs_by_seed),
        num_seeds=len(runs_by_seed),
        train_minutes_mean=float(np.mean(minutes)) if minutes else None,
        train_minutes_per_run={
            str(s): (None if c["train_seconds"] is None else c["train_seconds"] / 60.0)
            for s, c in runs_by_seed.items()
        },
        per_seed={name: dict(zip((str(s) for s in runs_by_seed), v)) for name, v in values.items()},
        mean={},
        sd={},
    )
    for name, vals in values.items():
        summary["mean"][name], summary["sd"][name] = mean_and_sd(vals)
    return summary, _average_per_image(per_image_by_seed)


def _average_per_image(per_image_by_seed):
    """{image_id: {metric: mean over seeds}}; None when a seed has no per-image file."""
    if any(per_image is None for *_, per_image in per_image_by_seed):
        return None
    seed0, dir0, dataset0, reference = per_image_by_seed[0]
    for seed, output_dir, dataset, per_image in per_image_by_seed[1:]:
        if set(per_image) != set(reference):
            raise ValueError(
                f"{os.path.join(output_dir, 'inference', dataset, 'nuclei_per_image.json')} has other "
                f"images than {os.path.join(dir0, 'inference', dataset0, 'nuclei_per_image.json')}"
            )
    return OrderedDict(
        (
            image_id,
            {
                key: float(np.mean([p[image_id][key] for *_, p in per_image_by_seed]))
                for key, _ in PAIRED_METRICS
            },
        )
        for image_id in reference
    )


def summarize_comparison(models, pairs=(), baseline=None, *, resamples=10000, seed=0):
    """
    Args:
        models: from :func:`collect_model_results`.
        pairs (list[(str, str)]): (A, B) model names (or ``"classical"``); differences B - A.
        baseline (dict or None): ``{dataset images: collect_run-like dict}`` of the classical
            baseline (one "run", deterministic).
        resamples, seed: of :func:`paired_bootstrap`.

    Returns:
        dict: the content of ``comparison.json``.
    """
    first = next(iter(models.values()))["runs"]
    dataset_images = sorted({_images_of(d) for d in next(iter(first.values()))["datasets"]})
    out = OrderedDict(
        statistics=OrderedDict(
            sd=SD_NOTE,
            train_minutes="wall time of tools/train_net.py per run (start-up, training and the final "
            "evaluation; resumed runs add up their attempts), mean over seeds",
            pairs="paired per-image difference B - A, each image's value averaged over the seeds of "
            f"each model; mean over images, percentile bootstrap 95% CI ({resamples} resamples "
            f"of images, numpy default_rng seed {seed})",
            units="COCO AP in %, nuclei metrics as fractions; fg IoU and Dice are means of the "
            "per-image values, fg IoU pooled divides pixel counts summed over the images, "
            "TP/(TP+FP+FN) IoU 0.5 pooled divides the nuclei matched at IoU > 0.5 by the "
            "true plus predicted nuclei less the matched, each summed over the images",
        ),
        datasets=OrderedDict(),
    )
    check_pairs(pairs, list(models) + ([BASELINE_KEY] if baseline else []))
    for images in dataset_images:
        rows, per_image = OrderedDict(), {}
        for name, entry in models.items():
            rows[name], per_image[name] = _model_summary(entry["runs"], images)
            rows[name]["label"] = name
            rows[name]["config_file"] = entry["config_file"]
            rows[name]["opts"] = entry["opts"]
        if baseline and images in baseline:
            summary, per_image[BASELINE_KEY] = _model_summary({0: baseline[images]}, images)
            summary.update(
                label=CLASSICAL_BASELINE_NAME,
                seeds=[],
                num_seeds=0,
                train_minutes_mean=0.0,
                train_minutes_per_run={},
                deterministic=True,
            )
            summary["sd"] = {k: (None if v is None else 0.0) for k, v in summary["mean"].items()}
            rows[BASELINE_KEY] = summary
        pair_results = []
        for a, b in pairs:
            pair_results.append(_pair_summary(a, b, per_image, rows, resamples, seed))
        out["datasets"][images] = OrderedDict(
            num_images=_num_images(per_image), models=rows, pairs=pair_results
        )
    return out


def _num_images(per_image):
    counts = {len(p) for p in per_image.values() if p is not None}
    return counts.pop() if len(counts) == 1 else None


def _pair_summary(a, b, per_image, rows, resamples, seed):
    for name in (a, b):
        if per_image.get(name) is None:
            raise ValueError(
                f"--pair {a} {b}: model '{name}' has no per-image statistics "
                "(inference/<dataset>/nuclei_per_image.json in its run folders)"
            )
    if set(per_image[a]) != set(per_image[b]):
        only_a = sorted(map(str, set(per_image[a]) - set(per_image[b])))[:5]
        only_b = sorted(map(str, set(per_image[b]) - set(per_image[a])))[:5]
        raise ValueError(
            f"--pair {a} {b}: evaluated on other images ({rows[a]['evaluated_on']} vs "
            f"{rows[b]['evaluated_on']}); only in '{a}': {only_a}, only in '{b}': {only_b}"
        )
    image_ids = list(per_image[a])
    result = OrderedDict(a=a, b=b, image_ids=image_ids, metrics=OrderedDict())
    for key, _ in PAIRED_METRICS:
        diff = np.array([per_image[b][i][key] - per_image[a][i][key] for i in image_ids])
        stats = paired_bootstrap(diff, resamples=resamples, seed=seed)
        stats["b_better"] = int((diff > 0).sum())
        stats["a_better"] = int((diff < 0).sum())
        stats["differences"] = diff.tolist()
        result["metrics"][key] = stats
    return result


def _cell(mean, sd, decimals):
    if mean is None:
        return "-"
    if sd is None:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def format_comparison_markdown(comparison):
    """The Markdown of ``comparison.md`` from :func:`summarize_comparison`'s dict."""
    stats = comparison["statistics"]
    lines = [
        "# Model comparison",
        "",
        f"Mean ± {stats['sd']}; {stats['units']}. Training minutes: {stats['train_minutes']}.",
        "",
    ]
    if comparison.get("not_finished"):
        lines += [f"Not finished, left out: {', '.join(comparison['not_finished'])}.", ""]
    for images, block in comparison["datasets"].items():
        lines += [
            f"## Images of {images} ({block['num_images'] if block['num_images'] is not None else '?'} images)",
            "",
        ]
        header = ["model", "evaluated on", "seeds", "train min/run"] + [
            t for _, _, t, _ in COMPARISON_METRICS
        ]
        lines += [
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        ]
        for row in block["models"].values():
            evaluated = (
                row["evaluated_on"]
                if isinstance(row["evaluated_on"], str)
                else ", ".join(row["evaluated_on"])
            )
            seeds = "deterministic" if row.get("deterministic") else str(row["num_seeds"])
            minutes = (
                "-" if row["train_minutes_mean"] is None else f"{row['train_minutes_mean']:.1f}"
            )
            cells = [row["label"], evaluated, seeds, minutes]
            for task, key, _, decimals in COMPARISON_METRICS:
                name = _metric_name(task, key)
                cells.append(_cell(row["mean"][name], row["sd"][name], decimals))
            lines.append("| " + " | ".join(cells) + " |")
        if block["pairs"]:
            lines += ["", f"Pairs: {stats['pairs']}.", ""]
            header = ["A", "B", "images"]
            for _, title in PAIRED_METRICS:
                header += [f"Δ {title} (B − A) [95% CI]", f"B better / worse ({title})"]
            lines += ["| " + " | ".join(header) + " |", "|:---|:---|" + "---:|" * (len(header) - 2)]
            for pair in block["pairs"]:
                cells = [
                    block["models"][pair["a"]]["label"],
                    block["models"][pair["b"]]["label"],
                    str(len(pair["image_ids"])),
                ]
                for key, _ in PAIRED_METRICS:
                    m = pair["metrics"][key]
                    cells += [
                        f"{m['mean']:+.4f} [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]",
                        f"{m['b_better']} / {m['a_better']}",
                    ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _baseline_results(dataset_images, output_root):
    """The classical baseline on each image set, kept in ``<root>/classical/<dataset>/``."""
    baseline = {}
    for images in dataset_images:
        # the layout of a train_net.py run folder, so that collect_run reads it
        folder = os.path.join(output_root, BASELINE_KEY, images)
        if not has_final_metrics(folder):
            logger.info("scoring the classical baseline on %s", images)
            evaluate_classical_baseline(images, folder)
        collected = collect_run(folder)
        collected["train_seconds"] = 0.0
        baseline[images] = collected
    return baseline


def check_pairs(pairs, known):
    """Raise ValueError naming a ``--pair`` whose model is not among ``known``."""
    for a, b in pairs:
        for name in (a, b):
            if name not in known:
                raise ValueError(f"--pair {a} {b}: no model named '{name}'; models: {known}")


def run_comparison(
    models,
    seeds,
    output_root,
    *,
    pairs=(),
    common_opts=(),
    jobs=1,
    threads=None,
    baseline=True,
    resamples=10000,
    bootstrap_seed=0,
    train_script=None,
    runner=None,
    train=True,
):
    """
    Train (or resume, or skip) every (model, seed), then write ``comparison.md``,
    ``comparison.json`` and ``comparison.png`` into ``output_root``.

    Args:
        models (list[ModelSpec]): the rows.
        seeds (list[int]): each model is trained once per seed (config key SEED).
        output_root (str): runs go to ``<root>/<model>/seed<k>/``.
        pairs (list[(str, str)]): model names (A, B) whose paired differences B - A are shown.
        common_opts (list[str]): KEY VALUE overrides for every model (the model's own win).
        jobs, threads, train_script, runner: see :func:`train_runs`.
        baseline (bool): add the classical (Otsu + watershed) row.
        resamples, bootstrap_seed: of :func:`paired_bootstrap`.
        train (bool): False: train nothing, tabulate the runs already finished; the others
            are listed under "not_finished" (in the JSON and above the Markdown table).

    Returns:
        dict: the content of ``comparison.json``.
    """
    from .plot import plot_comparison

    if not models:
        raise ValueError("no models to compare: give at least one --model NAME=CONFIG.yaml")
    if baseline and any(m.name == BASELINE_KEY for m in models):
        raise ValueError(f"model name '{BASELINE_KEY}' is the classical baseline's; choose another")
    # every argument is checked before the first training
    check_writable_folder(output_root, "--output-root")
    runs = plan_runs(models, seeds, output_root, common_opts)
    check_pairs(pairs, [m.name for m in models] + ([BASELINE_KEY] if baseline else []))
    if train:
        train_runs(runs, jobs=jobs, threads=threads, train_script=train_script, runner=runner)
    finished = [run for run in runs if run_status(run.output_dir) == "finished"]
    if not finished:
        raise ValueError(f"no finished run under {output_root} for the models and seeds given")
    collected = collect_model_results(finished)
    first = next(iter(next(iter(collected.values()))["runs"].values()))
    dataset_images = sorted({_images_of(d) for d in first["datasets"]})
    baseline_results = _baseline_results(dataset_images, output_root) if baseline else None
    comparison = summarize_comparison(
        collected, pairs, baseline_results, resamples=resamples, seed=bootstrap_seed
    )
    comparison["not_finished"] = [
        f"{run.model.name}/seed{run.seed}" for run in runs if run not in finished
    ]
    with atomic_open(os.path.join(output_root, "comparison.json"), "w") as f:
        json.dump(comparison, f, indent=2)
    with atomic_open(os.path.join(output_root, "comparison.md"), "w") as f:
        f.write(format_comparison_markdown(comparison))
    for index, (images, block) in enumerate(comparison["datasets"].items()):
        name = "comparison.png" if index == 0 else f"comparison_{images}.png"
        plot_comparison(block, os.path.join(output_root, name), title=f"images of {images}")
    return comparison
