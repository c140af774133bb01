"""Shared pytest set-up: CPU only, small thread count, the `slow` marker, the shared data."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DSB2018 = REPO_ROOT.parent / "shared" / "datasets" / "dsb2018"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: real training or long benchmarks; run on purpose with `-m slow`"
    )
    # one thread per pytest-xdist worker (-n 2 runs two at once), else two
    torch.set_num_threads(
        1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
    )
    # The third-party warnings the tools filter (maskrcnnpp/utils/known_warnings.py).
    from maskrcnnpp.utils.known_warnings import pytest_filter_lines

    for line in pytest_filter_lines():
        config.addinivalue_line("filterwarnings", line)


# Building and running the full-width configs of the GPU schedules (configs/DSB2018/*.yaml; not
# DSB2018/cpu/ nor quick/) takes many seconds each: these tests run them under -m slow, and the
# quick and CPU configs in the CI set (every config still merges there: test_every_config_merges).
FULL_WIDTH_CONFIG_TESTS = {
    "test_config_merges_builds_and_runs",
    "test_shipped_config_trains_and_infers",
    "test_mosaics_keep_every_nucleus_with_every_shipped_config",
}


def _full_width_config(name):
    return (
        isinstance(name, str)
        and name.startswith("DSB2018/")
        and not name.startswith("DSB2018/cpu/")
    )


def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.originalname in FULL_WIDTH_CONFIG_TESTS and any(
            map(_full_width_config, params.values())
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_dsb2018():
    """Path of the shared real DSB2018 data (../shared/datasets/dsb2018); skips if absent."""
    if not (SHARED_DSB2018 / "stage1_train").is_dir():
        pytest.skip(f"shared DSB2018 data not found at {SHARED_DSB2018}")
    return SHARED_DSB2018


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Synthetic data is generated once per test session into a private cache."""
    cache = tmp_path_factory.getbasetemp() / "maskrcnnpp-cache"
    monkeypatch.setenv("MASKRCNNPP_CACHE", str(cache))


@pytest.fixture
def run_script():
    """Run a script of the repository (``tools/*.py``, ``datasets/*.py``) as a user does, in a
    subprocess with one OpenMP thread: ``run_script("tools/predict.py", *args)`` returns the
    ``subprocess.CompletedProcess`` (text ``stdout`` and ``stderr``, ``returncode``). Tests
    never import a script; what they call in-process is the library.

    ``env`` adds to (or overrides, OMP_NUM_THREADS included) the test's environment;
    ``timeout`` is in seconds (None: none). ``driver``, a Python file, runs instead of the
    script with the script's path and arguments after its own (``python driver script
    *args``): a driver that patches the library and then runs the script with ``runpy``
    (tests/engine/test_faults.py kills training in the middle of a checkpoint that way)."""

    def run(relative, *args, env=None, timeout=600, driver=None):
        command = [sys.executable, *([str(driver)] if driver else []), str(REPO_ROOT / relative)]
        return subprocess.run(
            [*command, *map(str, args)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )

    return run
