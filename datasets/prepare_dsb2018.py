#!/usr/bin/env python
"""Convert the 2018 Data Science Bowl nuclei data (Kaggle layout) for Detectron2.

Input (``--root DIR``), exactly the Kaggle download::

    DIR/stage1_train/<id>/images/<id>.png     one image per folder
    DIR/stage1_train/<id>/masks/*.png         one binary PNG per nucleus, same size
    DIR/<split>.txt                           optional: one image id a line, per split

Output (``--out OUT``, default ``DIR``): ``OUT/annotations/instances_<split>.json`` (COCO, RLE)
and ``OUT/semantic/<split>/<id>.png``, written atomically; images with bad or wrong-size masks
are reported and left out (``--strict``: stop). The layout, the split rule and every check are
described in :mod:`maskrcnnpp.data.dsb2018_conversion`, which does the work.

Usage::

    python datasets/prepare_dsb2018.py --root /data/dsb2018 [--out datasets/dsb2018] [--strict]

The conversion is :mod:`maskrcnnpp.data.dsb2018_conversion`.
"""

import argparse
import sys
from typing import Optional, Sequence

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from maskrcnnpp.data.dsb2018 import KAGGLE_IMAGES_DIRNAME  # noqa: E402
from maskrcnnpp.data.dsb2018_conversion import prepare_and_report  # noqa: E402
from maskrcnnpp.utils.cli import add_workers_option, exit_on_interrupt  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", required=True, help=f"folder holding {KAGGLE_IMAGES_DIRNAME}/ (Kaggle layout)"
    )
    parser.add_argument("--out", help="output folder (default: --root)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad image or mask")
    add_workers_option(parser)
    args = parser.parse_args(argv)
    return prepare_and_report(args.root, args.out, strict=args.strict, workers=args.workers)


if __name__ == "__main__":
    with exit_on_interrupt("prepare_dsb2018", "no file is left half written; run it again"):
        sys.exit(main())
