"""
Output of a benchmark run: Markdown tables on stdout, a JSON file of the records and a PNG
plot of the latencies.
"""

import json
from typing import Dict, List, Sequence

from maskrcnnpp.utils.atomic_io import atomic_open

__all__ = ["format_tables", "write_json", "plot_latencies"]


def _fmt(value, spec=".1f", suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _memory(record) -> str:
    memory = record.get("peak_memory_mib") or {}
    parts = []
    for step in ("inference", "train_step"):
        if step in memory:
            parts.append("error" if memory[step].get("error") else _fmt(memory[step]["mib"], ".0f"))
    return " / ".join(parts) or "-"


def _model_table(records: Sequence[Dict]) -> List[str]:
    lines = [
        "| model | variant | input | device | params M | GFLOPs | latency ms median [q1, q3] "
        "| latency / ref | train step ms median | train / ref | peak MiB infer / train | kept |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in records:
        latency = r["latency_ms"]
        train = r["train_step_ms"] or {}
        counts = ", ".join(f"{k} {v}" for k, v in (r["counts"] or {}).items()) or "-"
        params = _fmt(r["params_m"], ".2f")
        if "active_params_m" in (r["notes"] or {}):  # a pruned level runs a sub-network
            params += f" (runs {r['notes']['active_params_m']:.2f})"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['batch']}x{r['height']}x{r['width']} "
            f"| {r['device']} | {params} | {_fmt(r['gflops'])} "
            f"| {latency['median']:.0f} [{latency['q1']:.0f}, {latency['q3']:.0f}] "
            f"| {_fmt(r['latency_ratio'], '.2f', 'x')} | {_fmt(train.get('median'), '.0f')} "
            f"| {_fmt(r['train_step_ratio'], '.2f', 'x')} | {_memory(r)} | {counts} |"
        )
    return lines


def _throughput_table(records: Sequence[Dict]) -> List[str]:
    lines = ["| task | variant | images | seconds | images / s |", "|---|---|--:|--:|--:|"]
    for r in records:
        t = r["throughput"]
        lines.append(
            f"| {r['model']} | {r['variant'] or '-'} | {t['images']} | {t['seconds']:.2f} "
            f"| {_fmt(t['images_per_s'])} |"
        )
    return lines


def _prediction_table(records: Sequence[Dict]) -> List[str]:
    lines = [
        "| precision | what | input | device | ms median [q1, q3] | / float32 pass | speed-up vs float32 "
        "| max abs prob diff | mean abs prob diff | same class | memory kept | minor page faults |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for r in records:
        n, latency = r["notes"], r["latency_ms"]
        precision, what = r["variant"].split()
        lines.append(
            f"| {precision} | {what} ({n['num_tiles']} tile{'s' if n['num_tiles'] > 1 else ''}) "
            f"| {r['height']}x{r['width']} | {r['device']} "
            f"| {latency['median']:.0f} [{latency['q1']:.0f}, {latency['q3']:.0f}] "
            f"| {r['latency_ratio']:.2f}x | {_fmt(n.get('speedup_vs_float32'), '.2f', 'x')} "
            f"| {_fmt(n.get('max_abs_prob_diff'), '.4f')} | {_fmt(n.get('mean_abs_prob_diff'), '.5f')} "
            f"| {_fmt(n.get('same_class_fraction'), '.5f')} | {'yes' if n.get('memory_kept') else 'no'} "
            f"| {_fmt(n.get('minor_page_faults'), 'd')} |"
        )
    return lines


def _training_precision_table(records: Sequence[Dict]) -> List[str]:
    lines = [
        "| config | precision | batch | training step ms median [q1, q3] | speed-up vs float32 |",
        "|---|---|--:|--:|--:|",
    ]
    for r in records:
        step = r["train_step_ms"]
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['batch']} "
            f"| {step['median']:.0f} [{step['q1']:.0f}, {step['q3']:.0f}] "
            f"| {r['notes']['speedup_vs_float32']:.2f}x |"
        )
    return lines


def _time_to_quality_table(records: Sequence[Dict]) -> List[str]:
    first = records[0]["throughput"]
    lines = [
        f"Training minutes until an evaluation reached {first['metric']} >= {first['target']:.4g}.",
        "",
        "| model | run | minutes to target | final value | evaluations | train min | wall min |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in records:
        t = r["throughput"]
        reached = (
            "not reached" if t["minutes_to_target"] is None else f"{t['minutes_to_target']:.1f}"
        )
        final = "-" if t["final_value"] is None else f"{t['final_value']:.4f}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {reached} | {final} | {t['evaluations']} "
            f"| {t['train_minutes']:.1f} | {_fmt(t['wall_minutes'])} |"
        )
    return lines


def format_tables(records: Sequence[Dict]) -> str:
    """One Markdown table per suite, suites in first-seen order."""
    suites: Dict[str, List[Dict]] = {}
    for record in records:
        suites.setdefault(record["suite"], []).append(record)
    blocks = []
    for suite, suite_records in suites.items():
        if suite == "throughput":
            lines = _throughput_table(suite_records)
        elif suite == "unetpp_predict":
            lines = _prediction_table(suite_records)
        elif suite == "training_precision":
            lines = _training_precision_table(suite_records)
        elif suite == "time_to_quality":
            lines = _time_to_quality_table(suite_records)
        else:
            lines = _model_table(suite_records)
        blocks.append(f"### {suite}\n\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_json(records: Sequence[Dict], path: str) -> None:
    """``{"records": [...]}``, written atomically."""
    with atomic_open(path, "w") as f:
        json.dump({"records": list(records)}, f, indent=1)
        f.write("\n")


def plot_latencies(records: Sequence[Dict], path: str) -> None:
    """
    One panel per (suite, input, device) group: median inference latency of each variant with
    its interquartile range, and the ratio to the group's reference above each bar. Written
    atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: Dict[tuple, List[Dict]] = {}
    for r in records:
        if r["suite"] not in ("throughput", "time_to_quality", "training_precision") and r.get(
            "latency_ms"
        ):
            key = (r["suite"], r["batch"], r["height"], r["width"], r["device"])
            groups.setdefault(key, []).append(r)
    if not groups:
        return
    columns = min(2, len(groups))
    rows = (len(groups) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 3.6 * rows), squeeze=False)
    for axis, ((suite, batch, height, width, device), group) in zip(axes.flat, groups.items()):
        labels = [f"{r['model']}\n{r['variant']}" for r in group]
        medians = [r["latency_ms"]["median"] for r in group]
        errors = [
            [m - r["latency_ms"]["q1"] for m, r in zip(medians, group)],
            [r["latency_ms"]["q3"] - m for m, r in zip(medians, group)],
        ]
        bars = axis.bar(range(len(group)), medians, yerr=errors, capsize=3, color="#4c72b0")
        for bar, r in zip(bars, group):
            axis.annotate(
                _fmt(r["latency_ratio"], ".2f", "x"),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        axis.set_xticks(range(len(group)))
        axis.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        axis.set_ylabel("inference ms (median, IQR)")
        axis.set_title(f"{suite}: {batch}x{height}x{width}, {device}", fontsize=9)
    for axis in list(axes.flat)[len(groups) :]:
        axis.axis("off")
    figure.tight_layout()
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)
    plt.close(figure)
