#!/usr/bin/env python
"""
Compare models over seeds, with error bars and the classical (Otsu + watershed) floor:

    python tools/compare.py --help

The command ``maskrcnnpp-compare`` of an installed maskrcnnpp, run from the checkout; the code and
its documentation are in maskrcnnpp/cli/compare.py.
"""

import sys

from maskrcnnpp.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
