"""One writer per output folder: a run holds an exclusive lock on its output folder while it
writes there, and a second run into the same folder is refused at once. The lock is an
``flock`` on the folder itself (no lock file is left behind), so the kernel releases it when
the process ends, however it ends (a crash or ``kill -9`` included): a stale lock cannot
block the next run."""

import contextlib
import errno
import fcntl
import os

__all__ = ["FolderInUseError", "exclusive_folder"]


class FolderInUseError(RuntimeError):
    """Another process holds the output folder's lock; the message names the folder."""


def _lock(path: str, what: str) -> int:
    """Open and lock the folder ``path``; returns the open descriptor (the lock lives as long
    as it is open)."""
    for _ in range(3):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderInUseError(
                f"{what} {path} is in use by another run writing into it at this moment: wait "
                "for it to finish, or choose another folder"
            ) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        # the folder was removed (an empty one, by a run that ended) and made again between
        # open and flock: lock the folder that is there now
        os.close(fd)
        os.makedirs(path, exist_ok=True)
    raise FolderInUseError(f"{what} {path} keeps being removed and created by another process")


@contextlib.contextmanager
def exclusive_folder(path: str, what: str = "output folder"):
    """
    Hold the one-writer lock of folder ``path`` for the ``with`` block. The folder is created
    if it is missing (and removed again at the end if it is then still empty, so that a run
    that wrote nothing leaves nothing). A folder that cannot be created is not locked: nothing
    can write there, and the caller's own checks name the fault.

    Args:
        path (str): the output folder.
        what (str): how the message names the folder, e.g. ``"--output"``.

    Raises:
        FolderInUseError: another process holds the lock (the message names ``path``).
    """
    created = not os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd = _lock(path, what)
    except FolderInUseError:
        raise
    except OSError:  # not creatable or not a folder: the caller's checks say why
        yield
        return
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):  # only succeeds when still empty
                os.rmdir(path)
        os.close(fd)
