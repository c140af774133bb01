#!/usr/bin/env python
"""
Export a trained model to TorchScript, ONNX or a BioImage Model Zoo package, checked
against the eager model:

    python tools/export_model.py --help

The command ``maskrcnnpp-export`` of an installed maskrcnnpp, run from the checkout; the code and
its documentation are in maskrcnnpp/cli/export_model.py.
"""

import sys

# its known-warning filters go in before Detectron2's imports
from maskrcnnpp.cli.export_model import main

if __name__ == "__main__":
    sys.exit(main())
