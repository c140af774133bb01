"""The seeded comparison of ``tools/compare.py``: each (model, seed) trained or read
(:mod:`.runs`), the peers StarDist and Cellpose trained by their own recipes (:mod:`.peers`),
the table with paired per-image intervals (:mod:`.tables`) and its picture (:mod:`.plot`)."""
