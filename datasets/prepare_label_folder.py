#!/usr/bin/env python
"""Convert a folder of images + integer label images (StarDist / Cellpose layout) for Detectron2.

Input: ``--images DIR`` with ``<stem>.png/.tif/...`` and ``--labels DIR`` (default: the same
folder, as Cellpose keeps them) with one label image per image, ``<stem>.png/.tif`` or
``<stem>_masks``, ``_mask``, ``_labels``, ``_label`` + ``.png/.tif``: 0 background, k > 0 the
pixels of nucleus k (8/16/32-bit integers).

Output (``--out OUT``): ``OUT/annotations/instances_<split>.json`` (COCO, exact RLE),
``OUT/semantic/<split>/<stem>.png`` and ``OUT/splits.json``, the layout of
``prepare_dsb2018.py``; every check runs before anything is written. Bad pairs are reported
and left out (``--strict``: exit status 1, nothing written). Register OUT with the config key
``DATASETS.LABEL_FOLDERS "['NAME=OUT']"`` (datasets NAME_<split>, NAME_sem_seg_<split>). The
layout, the split rules and every check are described in :mod:`maskrcnnpp.data.label_folder`,
which does the work; the guide is docs/own_nuclei.md.

Usage::

    python datasets/prepare_label_folder.py --images my/images --labels my/masks \\
        --out datasets/mynuclei [--split-file splits.json | --val-fraction 0.2] \\
        [--strict] [--split-disconnected] [--channel C]

Multi-channel TIFFs need ``--channel C``: the nuclear channel, written per image to
``OUT/channel_images/`` (see :mod:`maskrcnnpp.data.label_folder`).
"""

import argparse
import sys
from typing import Optional, Sequence

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from maskrcnnpp.data.label_folder import prepare_and_report  # noqa: E402
from maskrcnnpp.utils.cli import add_workers_option, exit_on_interrupt  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", required=True, help="folder of the images")
    parser.add_argument(
        "--labels", help="folder of the label images (default: --images, the Cellpose layout)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    split = parser.add_mutually_exclusive_group()
    split.add_argument(
        "--split-file",
        help='JSON {"train": [image stems], "val": [...], ...} (default: all in "train")',
    )
    split.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="without --split-file: this fraction of the images, chosen by a hash of the "
        "file stem, in split 'val' (default: %(default)s)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="any bad file is an error: nothing is written"
    )
    parser.add_argument(
        "--split-disconnected",
        action="store_true",
        help="a label id in several 8-connected regions gives one instance per region "
        "(default: one instance, reported)",
    )
    parser.add_argument(
        "--channel",
        metavar="C",
        help="of multi-channel TIFFs (CYX/YXC, ImageJ, OME-TIFF), the nuclear channel: 0-based "
        "index or name, as tools/predict.py --channel; each image's is written to "
        "OUT/channel_images/ and trained on (default: images as they are)",
    )
    add_workers_option(parser)
    args = parser.parse_args(argv)
    return prepare_and_report(
        args.images,
        args.labels,
        args.out,
        split_file=args.split_file,
        val_fraction=args.val_fraction,
        strict=args.strict,
        split_disconnected=args.split_disconnected,
        workers=args.workers,
        channel=args.channel,
    )


if __name__ == "__main__":
    with exit_on_interrupt("prepare_label_folder", "no file is left half written; run it again"):
        sys.exit(main())
