"""Runners: turn an experiment config into a finished run folder.

A runner module exposes ``CONFIG_CLASS`` (its frozen config dataclass, from
:mod:`slbjax.configs`) and ``train_and_evaluate(cfg, data_dir, run_dir) -> dict``
returning the flat metrics; a family whose configs can share one program also
has ``train_and_evaluate_group(cfgs, data_dir, run_dirs)`` and
``shape_signature(cfg)``.  Config classes name their runner with a ``family``
class variable.  :func:`slbjax.rundir.execute` is what calls them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = ("imoe", "cvae", "sort", "history", "life")


def for_family(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown runner family {family!r}")
    return importlib.import_module(f"{__name__}.{family}")


def for_config(cfg) -> ModuleType:
    return for_family(type(cfg).family)
