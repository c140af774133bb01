"""
Score a COCO instance-segmentation results file against COCO ground truth:

    python tools/evaluate.py --gt val.json --pred coco_instances_results.json \
        [--out metrics.json] [--score-thresh 0.5]

- ``segm`` and ``bbox``: COCO AP in percent (AP, AP50, AP75, APs, APm, APl), maxDets
  [1, 10, 1000]; every detection counts, whatever its score.
- ``nuclei``: foreground IoU / Dice, DSB score, AJI and PQ (fractions) of the predictions with
  score >= --score-thresh.

With the image list of ``tools/predict.py`` (``coco_images.json`` beside --pred, or --images
FILE), results and ground truth are paired by file name; otherwise by image id. Prints a
table; with --out, writes ``{"segm": {...}, "bbox": {...}, "nuclei": {...}}`` (NaN as null)
atomically. Bad input exits with status 1 and a message naming the file and the fault, before
anything is written. The work is
:func:`maskrcnnpp.evaluation.results_file_evaluation.evaluate_results_file`.
"""

import argparse
import logging
import sys

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from maskrcnnpp.evaluation.results_file_evaluation import evaluate_results_file  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="COCO AP (segm, bbox) and nuclei metrics of a COCO results file."
    )
    parser.add_argument("--gt", required=True, help="COCO ground-truth JSON")
    parser.add_argument("--pred", required=True, help="COCO results JSON (list of detections)")
    parser.add_argument(
        "--images",
        help="image list of the results (tools/predict.py's coco_images.json; default: that "
        "file beside --pred, when there): pair results and ground truth by file name",
    )
    parser.add_argument("--out", help="write the metrics to this JSON file")
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        help="predictions with score >= this count for the nuclei metrics (default 0.5)",
    )
    args = parser.parse_args(argv)
    # warnings only: the tables are printed once, on stdout (Detectron2 logs them at INFO)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(levelname)s: %(message)s")
    return evaluate_results_file(
        args.gt, args.pred, out=args.out, score_thresh=args.score_thresh, images_path=args.images
    )


if __name__ == "__main__":
    sys.exit(main())
