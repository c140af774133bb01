"""Write files so that a crash or a kill at any moment leaves the old file or the new one,
never a half-written one."""

import contextlib
import os
import tempfile


def _umask():
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """
    ``with atomic_open(path, "w") as f: ...`` writes a temporary file in the same directory,
    flushes and fsyncs it, then renames it over ``path`` (and fsyncs the directory). On an
    exception the temporary file is removed and ``path`` is untouched. The file gets the
    permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), not the
    private ``0o600`` of temporary files.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` so that ``path`` holds either its old or its new content."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text):
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_png(path, image):
    """Write an (H, W) uint8/uint16 or (H, W, 3) uint8 RGB array as a PNG, atomically."""
    import cv2  # here: the other writers need no OpenCV

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, encoded.tobytes())
