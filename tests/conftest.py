"""Shared pytest fixtures.

Every test runs with 8 CPU devices and JAX's strict promotion rules, and
without run figures (``SLBJAX_FIGURES=0``) unless it turns them on.

``data_dir``: the real data folder named by ``$SLBJAX_DATA`` (laid out like
``shared/data``, with an ``imoe/`` folder).  Tests using it are skipped when the
variable is unset, and fail (not skip) when it is set but points nowhere
useful, so a typo cannot silently turn the real-data tests off.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

# Run figures cost about a second per run; the tests of the figures turn them on themselves.
os.environ.setdefault("SLBJAX_FIGURES", "0")

# Before any computation: 8 CPU devices, so CPU-only runs exercise multi-device code paths.
jax.config.update("jax_num_cpu_devices", 8)
# As strict as the library should be: no implicit dtype promotion (int + float,
# float32 + float64), no implicit rank promotion ([N, F] - [F] must be written out).
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
# One XLA compilation cache for the test session, shared by the pytest-xdist workers and
# the CLI subprocesses tests start (they inherit the variable): many tests train the same
# tiny configs, and a subprocess would otherwise compile them again.  Made by the first
# process that imports this file, removed when it exits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="slbjax-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def pytest_collection_modifyitems(config, items):
    """Files holding a test marked ``long`` first, the rest in collection order.

    With ``-n 2 --dist loadfile --no-loadscope-reorder`` (the README's command)
    a worker starts on the longest file while the other works through the
    short ones, so the two finish close together; pytest-xdist's default order
    (files with the most tests first) left the 3.5-minute smoke report to the
    end of the run.
    """
    first = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in first)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Path of the real data folder from ``$SLBJAX_DATA`` (skip if unset)."""
    value = os.environ.get("SLBJAX_DATA")
    if not value:
        pytest.skip("SLBJAX_DATA is not set (point it at a folder laid out like shared/data)")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"SLBJAX_DATA={value!r} is not a folder")
    if not (path / "imoe").is_dir():
        pytest.fail(f"SLBJAX_DATA={value!r} has no imoe/ folder")
    return path


TINY_RUN = ["imoe-synthetic", "--smoke", "--set", "train.epochs=1", "--set", "data.synthetic_cells=10"]


@pytest.fixture(scope="session")
def tiny_imoe_run(tmp_path_factory) -> Path:
    """One finished tiny imoe-synthetic run per test process, shared: read it, or copy it to
    change it."""
    from slbjax.cli import main

    run = tmp_path_factory.mktemp("shared-runs") / "tiny"
    assert main(["run", *TINY_RUN, "--workdir", str(run)]) == 0
    return run
