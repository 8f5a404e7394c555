"""One module per paper experiment; ``slbjax list`` shows them.

Each module's docstring names the paper table or figure, the command that
runs it and the paper's number; ``get_config(smoke=False)`` returns its
frozen config.  Module ``imoe_ul`` is the experiment ``imoe-ul``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from slbjax.errors import ConfigError


def names() -> list[str]:
    """Experiment names, sorted."""
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_")
    )


def load(name: str) -> ModuleType:
    """The module of experiment ``name`` (raises ConfigError listing the known ones)."""
    if name not in names():
        raise ConfigError(f"unknown experiment {name!r}; known experiments: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def summary(name: str) -> str:
    """First line of the experiment's docstring."""
    doc = load(name).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
