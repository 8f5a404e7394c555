"""Runners: turn an experiment config into a finished run folder.

A runner module exposes ``CONFIG_CLASS`` (its frozen config dataclass) and
``run(cfg, data_dir, run_dir) -> dict`` returning the flat metrics.  Config
classes name their runner with a ``family`` class variable.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = ("imoe", "cvae", "sort")


def for_family(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown runner family {family!r}")
    return importlib.import_module(f"{__name__}.{family}")


def for_config(cfg) -> ModuleType:
    return for_family(type(cfg).family)
