#!/usr/bin/env python
"""Write a small folder of images + 16-bit label images (the StarDist layout) from the synthetic
nuclei, to try ``prepare_label_folder.py`` and the guide docs/own_nuclei.md on::

    OUT/images/nuclei_<k>.png    8-bit RGB image
    OUT/masks/nuclei_<k>.tif     uint16 label image: 0 background, 1..N the nuclei

Usage::

    python datasets/make_example_label_folder.py --out /tmp/my_nuclei [--num-images 12] [--size 128]

The writer is :func:`maskrcnnpp.data.synthetic_nuclei.write_example_label_folder`.
"""

import argparse
import sys
from typing import Optional, Sequence

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

from maskrcnnpp.data.synthetic_nuclei import write_example_label_folder  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder to write images/ and masks/ into")
    parser.add_argument("--num-images", type=int, default=12, help="default: %(default)s")
    parser.add_argument(
        "--size", type=int, default=128, help="image side, pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the first image (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    write_example_label_folder(args.out, num_images=args.num_images, size=args.size, seed=args.seed)
    print(
        f"wrote {args.num_images} images to {args.out}/images, their label images to {args.out}/masks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
