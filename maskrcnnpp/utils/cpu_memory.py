"""
Keep freed memory in the process instead of giving it back to the system (glibc), so that the
large tensors of CPU inference and training do not page-fault afresh at every allocation.

glibc's ``malloc`` serves a block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it when freed; the next tensor of that size page-faults and zeroes every
4 KiB page again. A UNet++ pass over a 1024x1024 image allocates full-resolution maps of
128 MiB and more, about 16 GiB of fresh pages per pass (4.2 million minor page faults), and
half its CPU time went to them (docs/benchmark.md, "Memory kept in the process").
:func:`keep_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every block from the heap) and
its trim threshold out of reach (freed heap memory is kept for the next allocation): the
process then holds on to its peak memory until it exits.

The command-line tools call it at start; a user who sets glibc's own ``MALLOC_MMAP_MAX_`` or
``MALLOC_TRIM_THRESHOLD_`` environment variables keeps glibc's behaviour under their control
(e.g. ``MALLOC_MMAP_MAX_=65536``, glibc's default, to give memory back; the setting cannot be
undone in a running process, as the blocks already freed stay in the heap's free lists and
serve later requests). Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

import ctypes
import ctypes.util
import logging
import os

__all__ = ["GLIBC_MALLOC_ENV", "keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's environment variables for the same parameters: set by the user, they win
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
# "Setting M_TRIM_THRESHOLD to -1 disables trimming completely" (mallopt(3))
_NEVER_TRIM = -1

logger = logging.getLogger(__name__)


def _libc():
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # gnu_get_libc_version exists in glibc only: musl's and BSDs' mallopt differ or are stubs
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """
    Make glibc keep freed memory in the process (module docstring). Process-wide; affects
    allocations from the call on, and processes forked later (data loader workers).

    Returns:
        bool: True when the setting was applied; False when the C library is not glibc or the
        user set one of :data:`GLIBC_MALLOC_ENV` (their setting stays).
    """
    if any(name in os.environ for name in GLIBC_MALLOC_ENV):
        return False
    libc = _libc()
    if libc is None:
        return False
    applied = (
        libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    )
    if not applied:
        logger.warning(
            "mallopt refused the settings; freed memory goes back to the system as usual"
        )
    return applied
