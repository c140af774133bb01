#!/usr/bin/env python
"""Convert the 2018 Data Science Bowl nuclei data (Kaggle layout) for Detectron2.

Input (``--root DIR``), exactly the Kaggle download::

    DIR/stage1_train/<id>/images/<id>.png     one image per folder
    DIR/stage1_train/<id>/masks/*.png         one binary PNG per nucleus, same size
    DIR/<split>.txt                           optional: one image id a line, per split

Output (``--out OUT``, default ``DIR``)::

    OUT/annotations/instances_<split>.json    COCO instances, one category "nucleus" (id 1),
                                              compressed RLE masks, exact area, tight bbox
    OUT/semantic/<split>/<id>.png             uint8, 0 background, 1 nucleus (union of masks)
    OUT/<split>.txt                           only when DIR has no split lists (see below)

Every ``DIR/<split>.txt`` is a split. With none, a deterministic split is drawn, stratified
by imaging modality (dark-background fluorescence, light-background grayscale brightfield,
light-background colour histology, told apart by median brightness and colour spread), about
50/20/30 % train/val/test as in the UNet++ paper (335/134/201 of 670), and the lists are
saved to ``OUT/<split>.txt``.

Image ``file_name`` in the JSON is relative to OUT when the image lies inside OUT (the usual
case, OUT = DIR: the folder can then be moved as a whole), and absolute otherwise (e.g. a
read-only DIR converted into another OUT). Both resolve with ``image_root = OUT``.

A mask that is unreadable or empty is reported on stderr with its path and left out; an image
that cannot be read, or with a mask of another size than the image (its nuclei would be
taken as background), is reported and left out as a whole. With ``--strict`` the first
such problem stops the conversion with exit status 1 and an error naming the file. Images
without any nucleus are kept as negatives. All outputs are written atomically (temporary file
in the same folder, fsync, rename), so an interrupted run never leaves a half-written file;
the temporary files of a killed run are removed by the next one. An
``annotations/instances_<split>.json`` whose split has no list any more is reported (it stays
registered) and left as it is.

Usage::

    python datasets/prepare_dsb2018.py --root /data/dsb2018 [--out datasets/dsb2018] [--strict]

The conversion is :mod:`maskrcnnpp.data.dsb2018_conversion`.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from maskrcnnpp.data.dsb2018 import KAGGLE_IMAGES_DIRNAME  # noqa: E402
from maskrcnnpp.data.dsb2018_conversion import prepare_and_report  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", required=True, help=f"folder holding {KAGGLE_IMAGES_DIRNAME}/ (Kaggle layout)"
    )
    parser.add_argument("--out", help="output folder (default: --root)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad image or mask")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    return prepare_and_report(args.root, args.out, strict=args.strict, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
