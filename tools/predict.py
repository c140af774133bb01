#!/usr/bin/env python
"""
Predict the nuclei of your own images with a trained model:

    python tools/predict.py --help

The command ``maskrcnnpp-predict`` of an installed maskrcnnpp, run from the checkout; the code and
its documentation are in maskrcnnpp/cli/predict.py.
"""

import sys

# its known-warning filters go in before Detectron2's imports
from maskrcnnpp.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
