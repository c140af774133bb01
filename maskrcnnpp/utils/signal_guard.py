"""SIGINT / SIGTERM handling for a loop that writes files: a signal stops the loop between two
items, never while an item's files are being written."""

import contextlib
import signal
import threading

__all__ = ["Interrupted", "SignalGuard"]


class Interrupted(BaseException):
    """SIGINT or SIGTERM; a BaseException, so that no per-image ``except Exception`` eats it."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """Turns SIGINT / SIGTERM into :class:`Interrupted`, deferred while an image's files are
    being written (``with guard.deferred():``) so that no image is left half written."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.pending = None
        self._deferring = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self._deferring:
            self.pending = signum
        else:
            raise Interrupted(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    def hold(self):
        """From now on, signals only set ``pending``."""
        self._deferring = True

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.pending is not None:
            raise Interrupted(self.pending)
