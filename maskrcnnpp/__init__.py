"""maskrcnnpp: UNet++'s nested-dense skip pathways for Detectron2.

Importing this package registers its backbones, meta-architectures and datasets in
Detectron2's registries and DatasetCatalog.
"""

import warnings as _warnings

from .utils.known_warnings import filter_known_warnings as _filter_known_warnings

# Detectron2's import emits torch.jit deprecations: hidden during the import only.
with _warnings.catch_warnings():
    _filter_known_warnings(logs=False)
    from . import (
        data,  # noqa: F401  registers datasets
        evaluation,  # noqa: F401
        model_zoo,  # noqa: F401  registers the maskrcnnpp:// weights scheme
        modeling,  # noqa: F401  registers backbones and meta-architectures
    )
    from .config import add_maskrcnnpp_config

__all__ = ["add_maskrcnnpp_config"]
