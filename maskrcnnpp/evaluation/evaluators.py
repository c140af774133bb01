"""The evaluators a maskrcnnpp model is scored with (COCO AP and the nuclei metrics together), and
the one table the tools print their results in."""

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, SemSegEvaluator
from tabulate import tabulate

from ..data.image_io import read_label_image
from .nuclei_evaluator import NucleiEvaluator


def _load_label_image(filename, dtype=None):
    # Detectron2's default loader calls np.array(..., copy=False), an error under numpy 2.
    labels = read_label_image(filename)
    return labels if dtype is None else labels.astype(dtype)


def build_nuclei_evaluators(cfg, dataset_name, output_folder=None):
    """
    COCO bbox + segm AP (instance datasets) or Detectron2's semantic metrics (semantic datasets;
    plus COCO segm AP on the dataset's instance twin for the ``"interior_boundary"`` target,
    whose model returns instances), and the nuclei metrics on both.

    COCOeval runs the official pycocotools code (``use_fast_impl=False``: the compiled fast
    COCOeval may be absent) with ``maxDets`` up to ``TEST.DETECTIONS_PER_IMAGE``.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    evaluators = []
    if evaluator_type == "coco":
        evaluators.append(
            COCOEvaluator(
                dataset_name,
                tasks=("bbox", "segm"),
                distributed=True,
                output_dir=output_folder,
                max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                use_fast_impl=False,
            )
        )
    elif evaluator_type == "sem_seg":
        evaluators.append(
            SemSegEvaluator(
                dataset_name,
                distributed=True,
                output_dir=output_folder,
                sem_seg_loading_fn=_load_label_image,
            )
        )
        instance_twin = MetadataCatalog.get(dataset_name).get("instance_dataset_name", None)
        if cfg.MODEL.UNETPP.TARGET == "interior_boundary" and instance_twin:
            # the model returns nuclei instances too: COCO mask AP against the instance twin
            # (same images, same image ids)
            evaluators.append(
                COCOEvaluator(
                    instance_twin,
                    tasks=("segm",),
                    distributed=True,
                    output_dir=output_folder,
                    max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                    use_fast_impl=False,
                )
            )
    else:
        raise ValueError(
            f"dataset '{dataset_name}' has evaluator_type '{evaluator_type}'; maskrcnnpp evaluates "
            "'coco' (instances) and 'sem_seg' (semantic) datasets"
        )
    evaluators.append(
        NucleiEvaluator(
            dataset_name,
            score_thresh=cfg.TEST.NUCLEI.SCORE_THRESH,
            output_dir=output_folder,
            num_vis=cfg.TEST.NUCLEI.NUM_VIS,
        )
    )
    return DatasetEvaluators(evaluators)


# the columns of format_results_table: (task, metric)
_COLUMNS = (
    ("segm", "AP"),
    ("segm", "AP50"),
    ("segm", "AP75"),
    ("bbox", "AP"),
    ("nuclei", "iou"),
    ("nuclei", "dice"),
    ("nuclei", "dsb_score"),
    ("nuclei", "aji"),
    ("nuclei", "pq"),
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
            row.append(
                "-" if value is None else (f"{value:.2f}" if task != "nuclei" else f"{value:.4f}")
            )
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="pipe")
