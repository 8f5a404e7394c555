"""Where a run's numbers come from: the data files it read, the packages, the commit.

The data loaders call :func:`record` with every file they read; inside
:func:`recording` those paths are collected, and :func:`describe` turns them
into what ``config.json`` keeps under ``provenance``: the data folder (None when
the run read no file from it), the SHA-256 of each file read (relative to the
data folder where it lies inside), the versions of the packages that shape the
numbers, the Python version and the git commit of the slbjax source (with
``dirty`` when it has uncommitted changes), or None outside a git checkout.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import platform
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

PACKAGES = ("slbjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pandas",
            "scipy", "scikit-learn", "chex")
_READS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("slbjax_reads", default=None)


def record(path: str | os.PathLike) -> None:
    """Notes that a data file was read (a no-op outside :func:`recording`)."""
    reads = _READS.get()
    if reads is not None:
        reads.add(os.path.abspath(path))


@contextlib.contextmanager
def recording() -> Iterator[set[str]]:
    """Collects the paths :func:`record` sees while the block runs."""
    reads: set[str] = set()
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """``<commit>`` or ``<commit>+dirty`` of the checkout holding this source, else None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty else "")


def describe(data_dir: str | os.PathLike | None, reads: set[str]) -> dict:
    """The ``provenance`` section of ``config.json``."""
    root = Path(data_dir).resolve() if data_dir else None
    files = {}
    for path in sorted(reads):
        p = Path(path)
        if not p.is_file():
            continue
        name = str(p.relative_to(root)) if root and p.resolve().is_relative_to(root) else str(p)
        files[name] = sha256(p)
    # the folder is recorded only when the run read from it (the synthetic cohort reads nothing)
    return {"data_dir": str(root) if root and files else None, "files_sha256": files,
            "packages": versions(), "python": platform.python_version(), "git_commit": git_commit()}
