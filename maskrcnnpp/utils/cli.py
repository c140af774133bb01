"""One-line errors for the command-line tools: the message names the file, key or value at
fault; the traceback is printed only when the environment variable ``MASKRCNNPP_TRACEBACK``
is set to a non-empty value other than ``0``. Also the options several tools share."""

import contextlib
import os
import signal
import sys
import traceback

__all__ = [
    "TRACEBACK_ENV",
    "add_workers_option",
    "error_message",
    "exit_on_errors",
    "exit_on_interrupt",
    "ignore_interrupts",
    "print_error",
]

TRACEBACK_ENV = "MASKRCNNPP_TRACEBACK"


def error_message(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without the quotes repr adds)."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def print_error(prefix: str, error: BaseException) -> None:
    """``prefix: message`` on stderr, after the traceback when ``MASKRCNNPP_TRACEBACK`` is set."""
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"{prefix}: {error_message(error)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_errors(prefix: str, errors, status: int = 2):
    """Turn ``errors`` raised in the block into one line on stderr and ``SystemExit(status)``."""
    try:
        yield
    except errors as e:
        print_error(prefix, e)
        raise SystemExit(status) from None


@contextlib.contextmanager
def exit_on_interrupt(prefix: str, hint: str = ""):
    """Ctrl-C (SIGINT) in the block: ``prefix: interrupted by SIGINT[; hint]`` on stderr
    instead of a KeyboardInterrupt traceback, and the process ends by SIGINT as before (the
    shell sees exit status 130)."""
    try:
        yield
    except KeyboardInterrupt:
        print(
            f"{prefix}: interrupted by SIGINT" + (f"; {hint}" if hint else ""),
            file=sys.stderr,
            flush=True,
        )
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(130) from None  # where the signal cannot end the process


def ignore_interrupts() -> None:
    """A worker process's initializer: Ctrl-C reaches the whole process group, and the main
    process alone reports it and stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def add_workers_option(parser) -> None:
    """``--workers N`` on an ``argparse`` parser: processes of a dataset conversion (default:
    the CPU count, at most 8)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes (default: %(default)s)",
    )
