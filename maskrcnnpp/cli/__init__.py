"""The command-line tools. Each module's ``main(argv=None)`` parses the arguments, does the
work and returns the exit status; the scripts of the checkout (``tools/<module>.py``), the
console scripts that ``pip install`` writes and ``python -m maskrcnnpp.cli.<module>`` all run it:

- ``maskrcnnpp-train``: :mod:`.train_net` (``tools/train_net.py``)
- ``maskrcnnpp-predict``: :mod:`.predict` (``tools/predict.py``)
- ``maskrcnnpp-export``: :mod:`.export_model` (``tools/export_model.py``)
- ``maskrcnnpp-evaluate``: :mod:`.evaluate` (``tools/evaluate.py``)
- ``maskrcnnpp-compare``: :mod:`.compare` (``tools/compare.py``)

A module that installs the known-warning filters
(:func:`maskrcnnpp.utils.known_warnings.filter_known_warnings`) does so when it is imported,
before it imports Detectron2's modules: importing one of them is starting that tool.
"""
