"""
Where a detector's inference time goes, component by component (bottom-up, lateral convs, nested
nodes, output convs, the neck's own work, RPN, ROI heads, the rest), for Mask R-CNN and
Mask R-CNN++ side by side: what a latency ratio is made of.
"""

import re
import statistics
import time
from typing import Dict, List, Sequence

import torch

from .case import BenchmarkCase, synchronize

__all__ = ["COMPONENTS", "ComponentTimer", "profile_case_group", "format_module_profile"]

# (component, pattern of the module names it sums, relative to the detector; a backbone
# measured alone has the same names without "backbone.")
COMPONENTS = (
    ("bottom-up", r"backbone\.bottom_up"),
    ("lateral convs", r"backbone\.fpn_lateral\d+"),
    ("nested nodes X(i, j>=1)", r"backbone\.x_\d+_\d+"),
    ("output convs", r"backbone\.fpn_output\d+"),
    ("top block (P6)", r"backbone\.top_block"),
    ("RPN", r"proposal_generator"),
    ("ROI heads", r"roi_heads"),
)
NECK_REST = "neck outside its convs (up-sampling, sums, layout)"
REST = "rest (pre- and post-processing)"


def _component_modules(
    model: torch.nn.Module, components=COMPONENTS
) -> Dict[str, List[torch.nn.Module]]:
    prefix = "" if hasattr(model, "backbone") else "backbone."
    found = {name: [] for name, _ in components}
    found["backbone"] = [model.backbone] if hasattr(model, "backbone") else [model]
    for module_name, module in model.named_modules():
        for name, pattern in components:
            if re.fullmatch(pattern, prefix + module_name):
                found[name].append(module)
    return found


class ComponentTimer:
    """Forward hooks on a model's components that add up the seconds spent in each:
    ``components`` are (name, pattern of module names) as :data:`COMPONENTS`; ``backbone``
    is always timed."""

    def __init__(self, model: torch.nn.Module, device: str, components=COMPONENTS):
        self.device = device
        self.elapsed: Dict[str, float] = {}
        self._handles = []
        for name, modules in _component_modules(model, components).items():
            for module in modules:
                starts = []
                self._handles += [
                    module.register_forward_pre_hook(self._pre(starts)),
                    module.register_forward_hook(self._post(name, starts)),
                ]

    def _pre(self, starts):
        def hook(module, inputs):
            synchronize(self.device)
            starts.append(time.perf_counter())

        return hook

    def _post(self, name, starts):
        def hook(module, inputs, output):
            synchronize(self.device)
            self.elapsed[name] = self.elapsed.get(name, 0.0) + time.perf_counter() - starts.pop()

        return hook

    def remove(self):
        for handle in self._handles:
            handle.remove()


def _component_ms(per_round: List[Dict[str, float]]) -> Dict[str, float]:
    """Median ms of each component over the rounds, with the neck's rest and the rest."""
    in_backbone = [name for name, pattern in COMPONENTS if pattern.startswith(r"backbone\.")]
    for r in per_round:
        r[NECK_REST] = r.get("backbone", 0.0) - sum(r.get(n, 0.0) for n in in_backbone)
        r[REST] = r["total"] - r.get("backbone", 0.0) - r.get("RPN", 0.0) - r.get("ROI heads", 0.0)
    names = [name for name, _ in COMPONENTS] + [NECK_REST, REST, "backbone", "total"]
    return {n: 1000 * statistics.median(r.get(n, 0.0) for r in per_round) for n in names}


def profile_case_group(
    cases: Sequence[BenchmarkCase], *, rounds: int, warmup: int
) -> Dict[str, object]:
    """
    Builds every case of one group and times their inferences component by component (forward
    hooks; the device synchronized at each, so CUDA times include waiting for queued work),
    interleaved: ``warmup`` untimed rounds, then ``rounds`` timed ones, each round one
    inference of every case.

    Returns:
        dict: ``{"group": "<suite> <batch>x<H>x<W> <device>", "cases": [names],
        "ms": {case name: {component: median ms}}}``; components are :data:`COMPONENTS`,
        the neck's rest, the rest, ``backbone`` and ``total``.
    """
    first = cases[0]
    workloads = {case.name: case.build() for case in cases}
    timers = {name: ComponentTimer(w.module, first.device) for name, w in workloads.items()}
    per_round = {name: [] for name in workloads}
    try:
        for k in range(warmup + rounds):
            for name, workload in workloads.items():
                timers[name].elapsed.clear()
                synchronize(first.device)
                start = time.perf_counter()
                workload.infer()
                synchronize(first.device)
                if k >= warmup:
                    total = time.perf_counter() - start
                    per_round[name].append(dict(timers[name].elapsed, total=total))
    finally:
        for timer in timers.values():
            timer.remove()
    return {
        "group": f"{first.suite} {first.batch}x{first.height}x{first.width} {first.device}",
        "cases": list(workloads),
        "ms": {name: _component_ms(rounds_) for name, rounds_ in per_round.items()},
    }


def format_module_profile(profile: Dict[str, object]) -> str:
    """A Markdown table: one row per component, ms per case and each case's difference from
    the first case, in ms and in % of the first case's total."""
    names = profile["cases"]
    ms = profile["ms"]
    ref = names[0]
    header = ["component"] + [f"{n} ms" for n in names]
    for n in names[1:]:
        header += [f"{n} - {ref} ms", "% of ref total"]
    lines = [
        f"#### where the time goes: {profile['group']}",
        "",
        "| " + " | ".join(header) + " |",
        "|---" + "|--:" * (len(header) - 1) + "|",
    ]
    rows = [name for name, _ in COMPONENTS] + [NECK_REST, REST, "total"]
    ref_total = ms[ref]["total"]
    for row in rows:
        if all(ms[n][row] == 0 for n in names):
            continue
        cells = [row] + [f"{ms[n][row]:.0f}" for n in names]
        for n in names[1:]:
            diff = ms[n][row] - ms[ref][row]
            cells += [f"{diff:+.0f}", f"{100 * diff / ref_total:+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
