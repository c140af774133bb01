"""One table for COCO AP (percent) and nuclei metrics (fractions), as the tools print them."""
from tabulate import tabulate

_COLUMNS = (
    ("segm", "AP"), ("segm", "AP50"), ("segm", "AP75"), ("bbox", "AP"),
    ("nuclei", "iou"), ("nuclei", "dice"), ("nuclei", "dsb_score"), ("nuclei", "aji"), ("nuclei", "pq"),
)


def format_results_table(results_by_name):
    """
    Args:
        results_by_name (dict[str, dict]): row label (a model or dataset) -> Detectron2 results
            ``{"segm": {"AP": ...}, "nuclei": {"iou": ...}, ...}``.

    Returns:
        str: a pipe table with one row per entry; missing numbers show as "-".
    """
    headers = ["model"] + [f"{task} {name}" for task, name in _COLUMNS]
    rows = []
    for label, results in results_by_name.items():
        row = [label]
        for task, name in _COLUMNS:
            value = results.get(task, {}).get(name)
            row.append("-" if value is None else (f"{value:.2f}" if task != "nuclei" else f"{value:.4f}"))
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="pipe")
