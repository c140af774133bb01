#!/usr/bin/env python
"""
Train and evaluate maskrcnnpp models with Detectron2's DefaultTrainer (Detectron2's flags,
``--num-gpus N`` for N processes):

    python tools/train_net.py --help

The command ``maskrcnnpp-train`` of an installed maskrcnnpp, run from the checkout; the code and
its documentation are in maskrcnnpp/cli/train_net.py.
"""

import sys

# its known-warning filters go in before Detectron2's imports
from maskrcnnpp.cli.train_net import main

if __name__ == "__main__":
    sys.exit(main())
