"""
Shipped models by name, as Detectron2's ``model_zoo``: a name gives a config file and checked
weights, and ``maskrcnnpp://NAME`` works wherever Detectron2 reads ``MODEL.WEIGHTS``.
"""

import functools
import hashlib
import os

from iopath.common.file_io import PathHandler

from .catalog import MODELS

__all__ = [
    "SCHEME",
    "UnknownModelError",
    "ZooPathHandler",
    "add_model_arguments",
    "config_file_of",
    "get_config",
    "get_config_file",
    "get_weights_path",
    "list_models",
]

SCHEME = "maskrcnnpp://"
_ROOT = os.path.dirname(os.path.abspath(__file__))


class UnknownModelError(KeyError):
    """A name that is not a shipped model; the message lists the shipped ones."""

    def __str__(self):
        return str(self.args[0]) if self.args else super().__str__()


def list_models() -> list:
    """The names of the shipped models, sorted."""
    return sorted(MODELS)


def _entry(name: str):
    if name not in MODELS:
        known = ", ".join(list_models()) or "none"
        raise UnknownModelError(f"unknown model {name!r}; the shipped models are: {known}")
    return MODELS[name]


def get_config_file(name: str) -> str:
    """Path of the shipped model's whole config (its ``MODEL.WEIGHTS`` is ``maskrcnnpp://NAME``)."""
    return os.path.join(_ROOT, _entry(name).config_file)


def get_config(name: str, opts=()):
    """
    The shipped model's config with maskrcnnpp's keys, checked like any config file
    (:func:`maskrcnnpp.config.setup_cfg`), not frozen.

    Args:
        opts (list[str]): ``KEY VALUE`` overrides merged after the file.
    """
    from ..config.setup import setup_cfg

    return setup_cfg(get_config_file(name), list(opts), freeze=False)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _checked(path: str, sha256: str, size: int, mtime_ns: int) -> None:
    """Cached per file state: a file is hashed once per process unless it changes."""
    found = _sha256(path)
    if found != sha256:
        raise ValueError(
            f"corrupted weights file {path}: SHA-256 {found[:16]}... is not the shipped "
            f"{sha256[:16]}... (reinstall maskrcnnpp)"
        )


def get_weights_path(name: str) -> str:
    """
    The shipped model's weights file, its SHA-256 checked.

    Raises:
        UnknownModelError: ``name`` is not shipped (the message lists the shipped names).
        FileNotFoundError / ValueError: the file is missing or its content is not the shipped
            one (truncated, corrupted); the message names the file.
    """
    entry = _entry(name)
    path = os.path.join(_ROOT, entry.weights_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file of {name!r} missing: {path} (reinstall maskrcnnpp)")
    stat = os.stat(path)
    _checked(path, entry.sha256, stat.st_size, stat.st_mtime_ns)
    return path


class ZooPathHandler(PathHandler):
    """``maskrcnnpp://NAME`` -> the shipped weights file of NAME, checked (Detectron2's
    ``PathManager`` resolves ``MODEL.WEIGHTS`` through it)."""

    def _get_supported_prefixes(self):
        return [SCHEME]

    def _get_local_path(self, path, **kwargs):
        return get_weights_path(path[len(SCHEME) :])

    def _open(self, path, mode="r", **kwargs):
        return open(self._get_local_path(path), mode)

    def _exists(self, path, **kwargs):
        return path[len(SCHEME) :] in MODELS

    def _isfile(self, path, **kwargs):
        return self._exists(path)


def add_model_arguments(parser) -> None:
    """``--model NAME`` (a shipped model) or ``--config-file FILE``, one of them required."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--model",
        metavar="NAME",
        help=f"a shipped model, config and weights included: {', '.join(list_models()) or 'none'}",
    )
    group.add_argument(
        "--config-file", metavar="FILE", help="model config (YAML); weights as MODEL.WEIGHTS"
    )


def config_file_of(args) -> str:
    """The config file that ``--model`` / ``--config-file`` name (see :func:`add_model_arguments`).

    Raises:
        UnknownModelError: ``--model`` is not a shipped model (the message lists them).
    """
    return get_config_file(args.model) if args.model else args.config_file
