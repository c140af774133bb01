"""Does an exported model compute what the eager model computes? Compare their flat outputs
on sample images: detections field by field (boxes, scores, classes, mask probabilities),
other outputs (e.g. ``sem_seg``) element by element, and report the largest differences."""

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["ExportMismatchError", "OutputTolerance", "check_exported_outputs"]


class ExportMismatchError(RuntimeError):
    """The exported model's outputs differ from the eager model's beyond the tolerance."""


@dataclass(frozen=True)
class OutputTolerance:
    """
    Attributes:
        box_atol: largest allowed difference of a box coordinate, in pixels of the model's
            (resized) input image.
        atol: largest allowed absolute difference of scores, mask probabilities and other
            float outputs (``sem_seg``: plus ``rtol`` times the eager value).
        rtol: relative part of the tolerance of float outputs other than detections.
    """

    box_atol: float = 0.05
    atol: float = 1e-3
    rtol: float = 1e-3


@dataclass
class SampleComparison:
    """The comparison on one sample image."""

    source: str
    max_abs_diff: Dict[str, float] = field(default_factory=dict)
    num_detections: Optional[Dict[str, int]] = None  # {"eager": n, "exported": m}
    borderline_unmatched: int = 0  # detections on one side only, scored at the threshold
    problems: List[str] = field(default_factory=list)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())


def _match_detections(
    eager_boxes, eager_classes, exported_boxes, exported_classes, box_atol
) -> Tuple[List[int], List[int]]:
    """Pair detections one to one: by index when that already agrees, else each eager
    detection (in output order, i.e. by score) with the closest unused exported detection of
    its class whose box coordinates all lie within ``box_atol``. Returns paired indices."""
    n, m = len(eager_boxes), len(exported_boxes)
    if n == m and (
        n == 0
        or (
            torch.equal(eager_classes, exported_classes)
            and _max_abs_diff(eager_boxes, exported_boxes) <= box_atol
        )
    ):
        return list(range(n)), list(range(n))
    if n == 0 or m == 0:
        return [], []
    distance = torch.cdist(eager_boxes.double(), exported_boxes.double(), p=float("inf"))
    distance[eager_classes[:, None] != exported_classes[None, :]] = float("inf")
    used = torch.zeros(m, dtype=torch.bool)
    eager_index, exported_index = [], []
    for i in range(n):
        row = distance[i].masked_fill(used, float("inf"))
        j = int(row.argmin())
        if row[j] <= box_atol:
            used[j] = True
            eager_index.append(i)
            exported_index.append(j)
    return eager_index, exported_index


def _compare_instances(
    prefix: str,
    eager: Dict[str, torch.Tensor],
    exported: Dict[str, torch.Tensor],
    tolerance: OutputTolerance,
    score_threshold: Optional[float],
    result: SampleComparison,
) -> None:
    boxes, classes, scores = (prefix + k for k in ("pred_boxes", "pred_classes", "scores"))
    ei, xi = _match_detections(
        eager[boxes], eager[classes], exported[boxes], exported[classes], tolerance.box_atol
    )
    n, m = len(eager[boxes]), len(exported[boxes])
    result.num_detections = {"eager": n, "exported": m}
    ei, xi = torch.as_tensor(ei, dtype=torch.long), torch.as_tensor(xi, dtype=torch.long)
    for name in eager:
        if not name.startswith(prefix):
            continue
        if name == prefix + "image_size":
            diff = _max_abs_diff(eager[name], exported[name])
            limit = 0.0
        else:
            diff = _max_abs_diff(eager[name][ei], exported[name][xi])
            limit = tolerance.box_atol if name == boxes else tolerance.atol
            limit = 0.0 if not eager[name].is_floating_point() else limit
        result.max_abs_diff[name] = diff
        if diff > limit:
            result.problems.append(f"{name}: max abs difference {diff:.3g} > {limit:g}")

    unmatched = [
        (side, k, float(outputs[scores][k]))
        for side, outputs, count, paired in (("eager", eager, n, ei), ("exported", exported, m, xi))
        for k in sorted(set(range(count)) - set(paired.tolist()))
    ]

    def at_threshold(score: float) -> bool:
        return score_threshold is not None and abs(score - score_threshold) <= tolerance.atol

    result.borderline_unmatched = sum(at_threshold(s) for _, _, s in unmatched)
    clear = [u for u in unmatched if not at_threshold(u[2])]
    if clear:
        shown = ", ".join(f"{side} #{k} (score {s:.3f})" for side, k, s in clear[:5])
        result.problems.append(
            f"{prefix}: {len(clear)} detection(s) without a counterpart within {tolerance.box_atol} px "
            f"(eager kept {n}, exported {m}): {shown}{' ...' if len(clear) > 5 else ''}"
        )


def _compare_one(names, eager, exported, source, tolerance, score_threshold) -> SampleComparison:
    result = SampleComparison(source=source)
    if len(exported) != len(names):
        result.problems.append(
            f"the exported model returned {len(exported)} outputs, the eager model {len(names)} ({names})"
        )
        return result
    eager = {k: v.detach().cpu() for k, v in zip(names, eager)}
    exported = {k: v.detach().cpu() for k, v in zip(names, exported)}
    prefixes = [k[: -len("pred_boxes")] for k in names if k.endswith("pred_boxes")]
    for prefix in prefixes:
        _compare_instances(prefix, eager, exported, tolerance, score_threshold, result)
    for name in names:
        if any(name.startswith(p) for p in prefixes):
            continue
        a, b = eager[name], exported[name]
        if a.shape != b.shape:
            result.problems.append(f"{name}: shape {tuple(b.shape)}, eager {tuple(a.shape)}")
            continue
        diff = _max_abs_diff(a, b)
        result.max_abs_diff[name] = diff
        if a.is_floating_point():
            excess = (a.double() - b.double()).abs() - (
                tolerance.atol + tolerance.rtol * a.double().abs()
            )
            bad = a.numel() > 0 and float(excess.max()) > 0
        else:
            bad = diff > 0
        if bad:
            result.problems.append(
                f"{name}: max abs difference {diff:.3g} exceeds atol {tolerance.atol:g} + "
                f"rtol {tolerance.rtol:g} * |eager|"
            )
    return result


def check_exported_outputs(
    names: Sequence[str],
    eager_outputs: Sequence[Sequence[torch.Tensor]],
    exported_outputs: Sequence[Sequence[torch.Tensor]],
    sources: Sequence[str],
    *,
    tolerance: OutputTolerance = OutputTolerance(),
    score_threshold: Optional[float] = None,
) -> Dict:
    """
    Args:
        names: names of the flat outputs (``flattened_output_names``).
        eager_outputs, exported_outputs: per sample image, the flat output tensors of the eager
            and of the exported model.
        sources: per sample image, where it came from (for the messages).
        score_threshold: the model's detection score threshold; a detection that only one
            side kept is tolerated when its score is within ``tolerance.atol`` of it.

    Returns:
        A JSON-able report: ``max_abs_diff`` per output over all samples, ``tolerance`` and
        ``samples`` (one ``SampleComparison`` dict each).

    Raises:
        ExportMismatchError: listing every output of every sample that differs.
    """
    samples = [
        _compare_one(list(names), e, x, s, tolerance, score_threshold)
        for e, x, s in zip(eager_outputs, exported_outputs, sources)
    ]
    overall: Dict[str, float] = {}
    for sample in samples:
        for name, diff in sample.max_abs_diff.items():
            overall[name] = max(overall.get(name, 0.0), diff)
    report = {
        "max_abs_diff": overall,
        "tolerance": asdict(tolerance),
        "samples": [asdict(s) for s in samples],
    }
    failed = [s for s in samples if s.problems]
    if failed:
        lines = [f"  {s.source}: " + "; ".join(s.problems) for s in failed]
        raise ExportMismatchError(
            f"the exported model's outputs differ from the eager model's on {len(failed)} of "
            f"{len(samples)} sample image(s):\n" + "\n".join(lines)
        )
    return report
