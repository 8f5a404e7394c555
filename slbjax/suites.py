"""The paper experiment suites that ``slbjax report`` runs.

A suite is a list of :class:`Point` s: one training run each, labelled with
the paper table it feeds (``fig3c``, ``fig5a`` ...), the paper's group
(``UL-NCA CY25-05_1``, ``LSD``, ``NMC2.1`` ...), the model, the swept value
and the seed.  Points are built from the experiment modules in
``experiments/`` plus overrides, so every number of a report can be re-run
alone with ``slbjax run EXPERIMENT --set ...``.

Suites:

* ``imoe-paper``: iMOE, PatchTST and Informer on every UL-NCA condition of the
  published data and on LSD (Fig. 3c), the iMOE-linear and iMOE-woFO
  ablations on the same groups (Fig. 5a), and on UL-NCA CY25-05_1 the
  data-access (Fig. 5b), expert-count (Fig. 5c), horizon (Fig. 5d) and
  initial-SOC (Fig. 3f) studies; ten seeds each, as in the paper.
* ``cvae-paper``: the eight SOC cases of the CVAE study for every battery
  type whose workbook is in the data folder (Fig. 3 and 4), ten seeds.
* ``all``: both.

``smoke=True`` keeps the structure (every table and figure) at seconds-long
size: one UL-NCA condition and LSD, two values per sweep, two seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from slbjax import experiments
from slbjax.config import apply_overrides, valid_keys
from slbjax.data.pulse import SOURCES
from slbjax.errors import ConfigError
from slbjax.paths import require_data_dir
from slbjax.sweep import experiment_grid

SUITES = ("imoe-paper", "cvae-paper", "all")

UL_CONDITIONS = ("CY25-05_1", "CY45-05_1", "CY25-025_1", "CY35-05_1", "CY25-1_1")
"""UL-NCA conditions of the published data, in the paper's Fig. 3c order."""

SHORT_CELL_HORIZON = {"CY25-1_1": 10}
"""Conditions whose cells are too short for L = 50; the authors used L = 10 there."""

SWEEP_CONDITION = "CY25-05_1"
"""The condition of the sweep studies (Fig. 3f, 5b, 5c, 5d)."""

TRAJECTORY_MODELS = {
    "imoe": (),
    "patchtst": ("model.arch=patchtst",),
    "informer": ("model.arch=informer",),
    "imoe-linear": ("model.router=linear",),
    "imoe-wofo": ("model.use_load=false",),
}
"""Model name -> its overrides of ``imoe-ul`` / ``imoe-lsd`` (the switches the
``imoe-linear`` and ``imoe-wofo`` experiments set)."""

SWEEPS = {
    "fig5b": "imoe-data-access",
    "fig5c": "imoe-experts",
    "fig3f": "imoe-soc",
    "fig5d": "imoe-horizon",
}
"""Paper figure -> the experiment that declares its grid."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a suite.

    Attributes:
      table: paper figure the run feeds (``fig3c``, ``fig5a``, ``fig5b``, ...).
      group: the paper's group, e.g. ``UL-NCA CY25-05_1``, ``LSD``, ``NMC2.1``.
      model: ``imoe``, ``patchtst``, ``informer``, ``imoe-linear``,
        ``imoe-wofo`` or ``cvae``.
      x_key, x: the swept config key and its value (empty when not a sweep).
      seed: ``train.seed``.
      experiment: the experiment module the config comes from.
      overrides: applied to the experiment's config, in order.
      cfg: the resolved config.
    """

    table: str
    group: str
    model: str
    x_key: str
    x: str
    seed: int
    experiment: str
    overrides: tuple[str, ...]
    cfg: Any


def _point(table, group, model, experiment, overrides, smoke, seed, x_key="", x="") -> Point:
    module = experiments.load(experiment)
    cfg = apply_overrides(module.get_config(smoke=smoke), overrides)
    return Point(table, group, model, x_key, x, seed, experiment, tuple(overrides), cfg)


def _ul_overrides(condition: str) -> list[str]:
    out = [f"data.condition={condition}"]
    if condition in SHORT_CELL_HORIZON:
        out.append(f"data.horizon={SHORT_CELL_HORIZON[condition]}")
    return out


def imoe_points(smoke: bool, seeds: int) -> list[Point]:
    """Fig. 3c / 5a groups x models, then the sweeps on :data:`SWEEP_CONDITION`."""
    points = []
    conditions = (SWEEP_CONDITION,) if smoke else UL_CONDITIONS
    for seed in range(seeds):
        s = f"train.seed={seed}"
        for model, switches in TRAJECTORY_MODELS.items():
            table = "fig3c" if model in ("imoe", "patchtst", "informer") else "fig5a"
            for cond in conditions:
                points.append(_point(table, f"UL-NCA {cond}", model, "imoe-ul",
                                     [*switches, *_ul_overrides(cond), s], smoke, seed))
            points.append(_point(table, "LSD", model, "imoe-lsd", [*switches, s], smoke, seed))
        for table, experiment in SWEEPS.items():
            ((key, values),) = experiment_grid(experiments.load(experiment), smoke)
            for v in values:
                points.append(_point(table, f"UL-NCA {SWEEP_CONDITION}", "imoe", experiment,
                                     [*_ul_overrides(SWEEP_CONDITION), f"{key}={v}", s], smoke,
                                     seed, key, v))
    return points


def cvae_batteries(data_dir: Path | None) -> list[str]:
    """Battery types whose workbook is in ``data_dir/pulse``."""
    if data_dir is None:
        return []
    return [b for b, src in SOURCES.items() if (Path(data_dir) / "pulse" / src.filename).is_file()]


def cvae_points(smoke: bool, seeds: int, data_dir: Path | None) -> list[Point]:
    """One run per battery type; its seeds are members of the CVAE program."""
    batteries = cvae_batteries(data_dir)
    if not batteries:
        raise ConfigError(
            f"cvae-paper needs the pulse workbooks under <data-dir>/pulse/ "
            f"({', '.join(src.filename for src in SOURCES.values())}); none found in {data_dir}"
        )
    return [
        _point("cvae", b, "cvae", "cvae-pulse", [f"data.battery={b}", f"train.ensemble_size={seeds}"],
               smoke, 0)
        for b in batteries
    ]


def suite_points(name: str, smoke: bool, data_dir: Path | None,
                 sets: tuple[str, ...] | list[str] = ()) -> list[Point]:
    """Every point of suite ``name`` (see the module docstring), with ``sets`` (see
    :func:`with_sets`)."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; suites are: {', '.join(SUITES)}")
    require_data_dir(data_dir, f"suite {name}")
    seeds = 2 if smoke else 10
    points = []
    if name in ("imoe-paper", "all"):
        points += imoe_points(smoke, seeds)
    if name in ("cvae-paper", "all"):
        points += cvae_points(smoke, seeds, data_dir)
    return with_sets(points, sets, smoke)


def with_sets(points: list[Point], sets, smoke: bool) -> list[Point]:
    """``points`` with the ``key=value`` overrides of ``sets`` applied to every point whose
    config has the key, before the point's own overrides (so a suite's seeds, conditions
    and swept values stay its own).

    Raises:
      ConfigError: a key that no point's config has.
    """
    sets = list(sets)
    if not sets:
        return points
    keys = [s.partition("=")[0].strip() for s in sets]
    has = {id(p): set(valid_keys(p.cfg)) for p in points}
    for key in keys:
        if not any(key in has[id(p)] for p in points):
            raise ConfigError(f"--set {key}: no run of this suite has that key")
    out = []
    for p in points:
        mine = tuple(s for s, k in zip(sets, keys, strict=True) if k in has[id(p)])
        overrides = (*mine, *p.overrides)
        cfg = apply_overrides(experiments.load(p.experiment).get_config(smoke=smoke), overrides)
        out.append(dataclasses.replace(p, overrides=overrides, cfg=cfg))
    return out
