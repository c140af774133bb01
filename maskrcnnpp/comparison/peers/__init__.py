"""
The peers of the comparison tables, StarDist 2D and Cellpose 3, trained from scratch by their
own documented recipes on the same images and minutes as our models (docs/peers.md).

They run in a second environment, ``.venv-peers`` (``bash tools/setup_env.sh --peers``), as
subprocesses: this package never imports TensorFlow or Cellpose. It exports the registered
datasets' images for them (:mod:`.data`), runs their scripts (``tools/peers/*_peer.py``) and
scores the label images they predict with our evaluator (:mod:`.runs`).
"""
