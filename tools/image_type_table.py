#!/usr/bin/env python
"""
Nuclei metrics per image type (fluorescence by image size, histology, bright-field) from the
per-image records of finished runs:

    python tools/image_type_table.py --gt datasets/dsb2018/annotations/instances_val.json \
        --per-image results/dsb2018_cpu_compare/mask_rcnnpp_nuclei_recipe/seed0/inference/dsb2018_val/nuclei_per_image.json

Several --per-image files (seeds of one model) are averaged per type, metric by metric.
Prints a Markdown table; the types come from the images (maskrcnnpp/evaluation/image_types.py).
"""

import argparse
import json
import sys

import numpy as np

from maskrcnnpp.evaluation.image_types import image_types_of_coco, summarize_by_image_type

COLUMNS = (
    ("iou", "fg IoU"),
    ("dsb_score", "DSB"),
    ("aji", "AJI"),
    ("pq", "PQ"),
    ("accuracy_iou50_pooled", "TP/(TP+FP+FN) IoU 0.5 pooled"),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--gt", required=True, help="COCO ground truth of the split")
    parser.add_argument(
        "--per-image", required=True, nargs="+", help="nuclei_per_image.json of each run"
    )
    args = parser.parse_args(argv)
    types = image_types_of_coco(args.gt)
    tables = []
    for path in args.per_image:
        with open(path) as f:
            tables.append(summarize_by_image_type(json.load(f), types))
    print("| image type | images | nuclei | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|--:|--:|" + "--:|" * len(COLUMNS))
    for name in tables[0]:
        values = [np.mean([table[name][key] for table in tables]) for key, _ in COLUMNS]
        row = f"| {name} | {tables[0][name]['num_images']} | {tables[0][name]['num_gt']} | "
        print(row + " | ".join(f"{v:.4f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
