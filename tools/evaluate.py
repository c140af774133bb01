#!/usr/bin/env python
"""
Score a COCO instance-segmentation results file against COCO ground truth:

    python tools/evaluate.py --help

The command ``maskrcnnpp-evaluate`` of an installed maskrcnnpp, run from the checkout; the code and
its documentation are in maskrcnnpp/cli/evaluate.py.
"""

import sys

# its known-warning filters go in before Detectron2's imports
from maskrcnnpp.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
