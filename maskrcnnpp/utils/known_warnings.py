"""Third-party warnings that every run prints and that say nothing about the user's run, and
the filter that hides them, narrowly: each by its category, the module it is attributed to and
its message, so that any other warning (of the same libraries too) is still seen.

The tools (``tools/*.py``, ``datasets/prepare_dsb2018.py``) call :func:`filter_known_warnings`
at start-up; importing :mod:`maskrcnnpp` hides them only while it imports Detectron2 (the
``torch.jit.script`` deprecations are emitted then), leaving a library user's filters as they
were. The test suite applies the same list (tests/conftest.py).
"""

import logging
import warnings

__all__ = [
    "KNOWN_HARMLESS_LOGS",
    "KNOWN_HARMLESS_WARNINGS",
    "filter_known_warnings",
    "pytest_filter_lines",
]

# (category, module regex, message regex): why each is harmless.
KNOWN_HARMLESS_WARNINGS = (
    # pycocotools 2.0's C extension hands numpy 2 an object whose __array__ lacks the copy
    # keyword; numpy falls back to a copy, the masks are right.
    (
        DeprecationWarning,
        r"pycocotools\.",
        r"__array__ implementation doesn't accept a copy keyword",
    ),
    # Detectron2's anchor generator and RoI code call torch.meshgrid without indexing=; the
    # default ("ij") is the one they rely on.
    (
        UserWarning,
        r"torch\.functional",
        r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing argument",
    ),
    # Detectron2 and fvcore script and trace small helpers at import and export time.
    (FutureWarning, r"torch\.jit\.", r"`torch\.jit\.\w+` is deprecated"),
    (DeprecationWarning, r"torch\.jit\.", r"`torch\.jit\.\w+` is deprecated"),
)

# Notices torch logs (not warns), by logger and message start: Detectron2's is_fx_tracing()
# check on every model run, and the CUDA probe of torch.utils.cpp_extension on a CPU-only
# machine (Detectron2 imports it; no extension is built).
KNOWN_HARMLESS_LOGS = (
    (
        "torch.fx._symbolic_trace",
        "is_fx_tracing will return true for both fx.symbolic_trace and torch.export",
    ),
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
)


class _DropKnownNotice(logging.Filter):
    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


def filter_known_warnings(*, logs=True) -> None:
    """Ignore the :data:`KNOWN_HARMLESS_WARNINGS` (and, with ``logs``, drop the
    :data:`KNOWN_HARMLESS_LOGS`) in this process. Call it before importing Detectron2."""
    for category, module, message in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    if logs:
        for name, prefix in KNOWN_HARMLESS_LOGS:
            logger = logging.getLogger(name)
            if not any(
                isinstance(f, _DropKnownNotice) and f.prefix == prefix for f in logger.filters
            ):
                logger.addFilter(_DropKnownNotice(prefix))


def pytest_filter_lines():
    """The list as pytest ``filterwarnings`` lines (``action:message:category:module``; a
    colon cannot appear in a field, so each becomes ``.`` in the message regex)."""
    return [
        f"ignore:{message.replace(':', '.')}:{category.__name__}:{module}"
        for category, module, message in KNOWN_HARMLESS_WARNINGS
    ]
