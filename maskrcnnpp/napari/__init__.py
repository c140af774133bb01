"""The napari plugin (npe2 manifest ``napari.yaml``; install with ``pip install -e .[napari]``):
a reader of ``tools/predict.py``'s output folders (:mod:`.reader`) and the "Segment nuclei"
widget (:mod:`.widget`, its work in :mod:`.segmentation`). Importing this package does not
import napari; the widget module does."""
