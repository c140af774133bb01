"""The configuration front door: maskrcnnpp's config keys (:mod:`.defaults`), the checks that
name a bad key or value (:mod:`.checks`), and :func:`setup_cfg`, which builds a checked config
from a YAML file and overrides (:mod:`.setup`)."""

from .checks import check_datasets_registered, check_registered_names
from .defaults import add_maskrcnnpp_config
from .setup import resolve_device, setup_cfg

__all__ = [
    "add_maskrcnnpp_config",
    "check_datasets_registered",
    "check_registered_names",
    "resolve_device",
    "setup_cfg",
]
