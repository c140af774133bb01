"""The check every writing tool makes of its output folder before the work starts."""

import os

__all__ = ["OutputFolderError", "check_writable_folder"]


class OutputFolderError(ValueError):
    """An output folder that cannot be used; the message names it and says why."""


def check_writable_folder(path: str, what: str) -> None:
    """
    Check, without creating anything, that ``path`` is a folder or can be created as one, and
    is writable (also by its permission bits alone: root ignores them otherwise).

    Args:
        path (str): the output folder.
        what (str): how the message names it, e.g. ``"--output"`` or ``"OUTPUT_DIR"``.

    Raises:
        OutputFolderError: naming ``what``, ``path`` and the fault.
    """
    where = f"{what} {path}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputFolderError(
            f"{where} is a file, not a folder: give a folder (it is created if missing)"
        )
    existing = path
    while not os.path.exists(existing or "."):
        existing = os.path.dirname(existing)
    existing = existing or "."
    if not os.path.isdir(existing):
        raise OutputFolderError(f"{where} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK) or not os.stat(existing).st_mode & 0o222:
        raise OutputFolderError(f"{where} is not writable ({existing} is read-only)")
