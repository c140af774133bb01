"""Shipped nuclei models by name (``list_models()``, ``get_config(name)``, ``maskrcnnpp://NAME``).
Importing it registers the ``maskrcnnpp://`` scheme with Detectron2's ``PathManager``."""

from detectron2.utils.file_io import PathManager

from .model_zoo import (
    SCHEME,
    UnknownModelError,
    ZooPathHandler,
    add_model_arguments,
    config_file_of,
    get_config,
    get_config_file,
    get_weights_path,
    list_models,
)

PathManager.register_handler(ZooPathHandler(), allow_override=True)

__all__ = [
    "SCHEME",
    "UnknownModelError",
    "add_model_arguments",
    "config_file_of",
    "get_config",
    "get_config_file",
    "get_weights_path",
    "list_models",
]
