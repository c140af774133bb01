"""Build a config from a YAML file and command-line overrides, with errors that name the fault."""

import logging
import os
import re

import torch
import yaml
from detectron2.config import get_cfg

from ..data.label_folder import register_label_folders_of_config
from .checks import check_config_values, check_registered_names
from .defaults import add_maskrcnnpp_config

logger = logging.getLogger(__name__)


def resolve_device(cfg):
    """
    Keep ``cfg.MODEL.DEVICE`` when it can run here; fall back from CUDA to the CPU (and say so)
    when CUDA is absent. Modifies ``cfg`` in place and returns the device string.
    """
    device = cfg.MODEL.DEVICE
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU.", device)
        print(f"[maskrcnnpp] MODEL.DEVICE={device} but CUDA is not available: using the CPU.")
        cfg.MODEL.DEVICE = "cpu"
    return cfg.MODEL.DEVICE


def _ints_as_floats(cfg, opts):
    """The overrides with an integer literal given to a float key (``INPUT.SCALE_FACTOR_TEST 2``)
    written as that float (``2.0``), which yacs would refuse as a type mismatch."""
    opts = list(opts)
    for index in range(0, len(opts) - 1, 2):
        node = cfg
        for part in str(opts[index]).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = str(opts[index + 1]).strip()
        if isinstance(node, float) and re.fullmatch(r"[+-]?[0-9]+", value):
            opts[index + 1] = repr(float(int(value)))
    return opts


def _floats_for_float_keys(defaults, loaded):
    """``loaded`` (a YAML mapping) with every integer given to a float key of ``defaults``
    (``SCALE_FACTOR_TEST: 2``) made that float, in place, which yacs would refuse as a type
    mismatch."""
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(value, dict):
            _floats_for_float_keys(default, value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            loaded[key] = float(value)
    return loaded


def _merge_config_file(cfg, config_file):
    """``cfg.merge_from_file(config_file)``, with integers accepted for float keys."""
    loaded = cfg.load_yaml_with_base(config_file, allow_unsafe=True)
    if not isinstance(loaded, dict) or loaded.get("VERSION", cfg.VERSION) != cfg.VERSION:
        cfg.merge_from_file(config_file)  # not a mapping (reported below), or an old version
        return
    cfg.merge_from_other_cfg(type(cfg)(_floats_for_float_keys(cfg, loaded)))


def setup_cfg(config_file, opts=(), *, freeze=True):
    """
    Args:
        config_file (str): YAML file ("" for Detectron2's defaults plus maskrcnnpp's keys).
        opts (list[str]): trailing ``KEY VALUE`` overrides.

    Returns:
        CfgNode with maskrcnnpp's keys, the file and overrides merged, a usable device; the
        folders of ``DATASETS.LABEL_FOLDERS`` are registered.

    Raises:
        KeyError / ValueError naming the unknown key and the file (or the command line);
        ValueError naming a key whose value is not a registered name (backbone,
        meta-architecture, ...) and the registered names; ValueError naming a key whose
        number is out of range (SOLVER.IMS_PER_BATCH 0, a negative SOLVER.BASE_LR, ...), its
        value and where it was set; ValueError / FileNotFoundError naming a
        ``DATASETS.LABEL_FOLDERS`` entry that is not NAME=FOLDER or not prepared.
    """
    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(
                f"config file not found: {config_file}"
                + (" (a folder)" if os.path.isdir(config_file) else "")
            )
        try:
            _merge_config_file(cfg, config_file)
        except (KeyError, ValueError) as e:  # unknown key / type mismatch
            raise type(e)(
                f"{config_file} (or one of its _BASE_ files): {e.args[0] if e.args else e}"
            ) from e
        except yaml.YAMLError as e:
            raise ValueError(
                f"{config_file} (or one of its _BASE_ files) is not valid YAML: {e}"
            ) from e
        except (TypeError, AttributeError, AssertionError) as e:  # a YAML list, text, nothing
            raise ValueError(
                f"{config_file} (or one of its _BASE_ files) is not a config (a YAML mapping of "
                f"KEY: value): {type(e).__name__}: {e}"
            ) from e
        except FileNotFoundError as e:
            missing = e.filename or config_file
            raise FileNotFoundError(
                f"config file not found: {missing}"
                + ("" if missing == config_file else f" (a _BASE_ of {config_file})")
            ) from e
    if opts:
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got an odd number: {list(opts)}")
        try:
            cfg.merge_from_list(_ints_as_floats(cfg, opts))
        except (KeyError, AssertionError) as e:  # yacs asserts on an unknown key here
            raise KeyError(f"command-line override: {e.args[0] if e.args else e}") from e
        except ValueError as e:  # type mismatch
            raise ValueError(f"command-line override: {e.args[0] if e.args else e}") from e
    register_label_folders_of_config(cfg)
    check_registered_names(cfg, source=config_file or None)
    check_config_values(cfg, source=config_file or None, overridden=list(opts)[::2])
    resolve_device(cfg)
    if freeze:
        cfg.freeze()
    return cfg
