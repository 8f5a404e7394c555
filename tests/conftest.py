"""Shared pytest fixtures.

``data_dir``: the real data folder named by ``$SLBJAX_DATA`` (laid out like
``shared/data``, with an ``imoe/`` folder).  Tests using it are skipped when the
variable is unset, and fail (not skip) when it is set but points nowhere
useful, so a typo cannot silently turn the real-data tests off.
"""

import os

# Before anything imports jax: let CPU-only runs exercise multi-device code paths.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


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
