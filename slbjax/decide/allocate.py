"""Allocation of retired cell groups to second-life applications or to recycling.

The catalogue (:func:`load_catalogue`, by default the bundled
``applications.toml``) lists the applications, each with the numbers the
allocation needs and a source for every number (docs/allocation.md).

A group g is **feasible** for an application a (:func:`feasibility`) when

* its SOH (the weakest cell's) is at least the application's ``entry_soh``,
* its SOH is above the application's ``end_of_life_soh``,
* its predicted life to that end-of-life SOH, at the confidence bound the
  caller chose (e.g. the lower 90 % bound), covers the required cycles,
* the application's C-rate is within the C-rate the cells were tested at: the
  life prediction was learnt at that load and says nothing about a harder one
  (``tested_c_rate=None`` turns the check off),
* its usable energy fits in the application's demand, and
* the application pays more than recycling.

:func:`allocate` then solves, with ``scipy.optimize.milp``, the binary program

    maximise   sum_{g,a} (value_a - recycling_value) * E_g * x[g, a]
    subject to sum_a x[g, a] <= 1                 for every group g
               sum_g E_g * x[g, a] <= demand_a    for every application a
               x[g, a] = 0                        where (g, a) is infeasible
               x[g, a] in {0, 1}

with E_g the group's usable energy (kWh); a group with no application is
recycled, worth ``recycling_value * E_g``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp

from slbjax.errors import DataError

RECYCLE = "recycle"
NUMBER_FIELDS = ("c_rate", "entry_soh", "end_of_life_soh", "service_years", "cycles_per_year",
                 "value", "demand_kwh")
FIELDS = ("name", *NUMBER_FIELDS)


@dataclasses.dataclass(frozen=True)
class Application:
    """One second-life application of the catalogue.

    Attributes:
      name: unique name (not ``"recycle"``).
      c_rate: discharge C-rate the application asks for (1/h).
      entry_soh: lowest SOH (fraction of rated capacity) a group may enter with.
      end_of_life_soh: SOH at which a group leaves the application (< ``entry_soh``).
      service_years, cycles_per_year: service the application needs from a group.
      value: relative value of one kWh of usable energy placed in the application.
      demand_kwh: most usable energy the application absorbs (``inf``: no limit).
      sources: number field -> where its value comes from.
      assumed: number fields whose value is a placeholder to set for one's site.
    """

    name: str
    c_rate: float
    entry_soh: float
    end_of_life_soh: float
    service_years: float
    cycles_per_year: float
    value: float
    demand_kwh: float
    sources: Mapping[str, str] = dataclasses.field(compare=False)
    assumed: frozenset[str] = frozenset()

    @property
    def required_cycles(self) -> float:
        """Cycles the application needs: ``service_years * cycles_per_year``."""
        return self.service_years * self.cycles_per_year


# ------------------------------------------------------------------ catalogue
def bundled_catalogue() -> Path:
    """Path of the catalogue shipped with slbjax (``slbjax/decide/applications.toml``)."""
    return Path(str(resources.files("slbjax.decide") / "applications.toml"))


def _number(path: str, where: str, entry: object) -> tuple[float, str, bool]:
    """(value, source, assumed) of one ``{ value, source, assumed }`` table."""
    expected = 'a table { value = <number>, source = "<text>" } (optionally assumed = true)'
    if not isinstance(entry, dict):
        raise DataError(path, f"expected {expected}, got {entry!r}", field=where)
    unknown = sorted(set(entry) - {"value", "source", "assumed"})
    if unknown:
        raise DataError(path, f"unknown key {unknown[0]!r}; expected {expected}", field=where)
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise DataError(path, f"value must be a number, got {value!r}", field=where)
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise DataError(path, f"every number needs a non-empty source string, got {source!r}",
                        field=where)
    assumed = entry.get("assumed", False)
    if not isinstance(assumed, bool):
        raise DataError(path, f"assumed must be true or false, got {assumed!r}", field=where)
    return float(value), source, assumed


def _application(path: str, index: int, raw: object) -> Application:
    if not isinstance(raw, dict):
        raise DataError(path, f"expected a table, got {raw!r}", field=f"application {index + 1}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(path, f"expected a non-empty string, got {name!r}",
                        field=f"application {index + 1}.name")
    if name == RECYCLE:
        raise DataError(path, f"{RECYCLE!r} is reserved for groups that go to no application",
                        field=f"{name}.name")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise DataError(path, f"unknown field; expected one of {', '.join(FIELDS)}",
                        field=f"{name}.{unknown[0]}")
    values, sources, assumed = {}, {}, set()
    for key in NUMBER_FIELDS:
        if key not in raw:
            raise DataError(path, "missing field", field=f"{name}.{key}")
        values[key], sources[key], is_assumed = _number(path, f"{name}.{key}", raw[key])
        if is_assumed:
            assumed.add(key)
    for key in NUMBER_FIELDS:
        v = values[key]
        if key == "demand_kwh":
            if v < 0:
                raise DataError(path, f"expected >= 0 kWh (inf for no limit), got {v}",
                                field=f"{name}.{key}")
        elif not math.isfinite(v):
            raise DataError(path, f"expected a finite number, got {v}", field=f"{name}.{key}")
        elif key in ("entry_soh", "end_of_life_soh") and not 0 < v <= 1:
            raise DataError(path, f"expected a SOH fraction in (0, 1], got {v}",
                            field=f"{name}.{key}")
        elif key == "value" and v < 0:
            raise DataError(path, f"expected a value >= 0, got {v}", field=f"{name}.{key}")
        elif key in ("c_rate", "service_years", "cycles_per_year") and v <= 0:
            raise DataError(path, f"expected a number > 0, got {v}", field=f"{name}.{key}")
    if values["end_of_life_soh"] >= values["entry_soh"]:
        raise DataError(path, f"end-of-life SOH {values['end_of_life_soh']} must lie below "
                        f"entry_soh {values['entry_soh']}", field=f"{name}.end_of_life_soh")
    return Application(name=name, **values, sources=sources, assumed=frozenset(assumed))


def load_catalogue(path: str | os.PathLike | None = None) -> list[Application]:
    """Applications of a catalogue TOML file (None: the bundled one).

    The file holds ``[[application]]`` tables with a ``name`` and, for each of
    :data:`NUMBER_FIELDS`, ``{ value = ..., source = "..." }`` plus
    ``assumed = true`` where the value is a placeholder (see the bundled file).

    Raises:
      DataError: a missing or unreadable file, or a field that is missing, of
        the wrong type or out of range (names the file, the application and
        the field).
    """
    p = bundled_catalogue() if path is None else Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(p, "catalogue file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(p, f"cannot read the catalogue: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DataError(p, f"not valid TOML: {e}") from None
    entries = raw.get("application")
    if not isinstance(entries, list) or not entries:
        raise DataError(p, "expected one or more [[application]] tables", field="application")
    apps = [_application(str(p), i, e) for i, e in enumerate(entries)]
    seen = set()
    for app in apps:
        if app.name in seen:
            raise DataError(p, "duplicate application name", field=f"{app.name}.name")
        seen.add(app.name)
    return apps


# ------------------------------------------------------------------ per-group inputs
def life_to_threshold(trajectory_ah: np.ndarray, nominal_ah: float, soh: float) -> int:
    """Cycles until the capacity first falls to ``soh * nominal_ah`` or below.

    ``trajectory_ah[k]`` is the capacity k + 1 cycles after the last measured
    one, so a first fall at index k gives k + 1 (the convention of
    :func:`slbjax.data.life.first_passage`).  "At or below" rather than
    "below" because predicted trajectories end flat at the model's end-of-life
    capacity.  When the trajectory never gets there, the result is its full
    length: the life is then *at least* that, not known to end there.
    """
    q = np.asarray(trajectory_ah, dtype=np.float64)
    hit = np.flatnonzero(q <= soh * nominal_ah)
    return int(hit[0] + 1) if hit.size else int(q.size)


def usable_energy_kwh(size: np.ndarray, weakest_capacity_ah: np.ndarray,
                      nominal_voltage_v: float) -> np.ndarray:
    """[G] usable energy (kWh) of series groups: size x weakest cell's Ah x nominal V / 1000.

    A series string delivers only what its weakest cell holds; the nominal
    voltage stands in for the mean discharge voltage.
    """
    return (np.asarray(size, np.float64) * np.asarray(weakest_capacity_ah, np.float64)
            * nominal_voltage_v / 1000.0)


# ------------------------------------------------------------------ allocation
def feasibility(apps: Sequence[Application], soh: np.ndarray, energy_kwh: np.ndarray,
                life_cycles: np.ndarray, *, tested_c_rate: float | None = 1.0,
                recycling_value: float = 0.0) -> tuple[np.ndarray, list[list[str]]]:
    """Which (group, application) pairs :func:`allocate` may use, and why not the others.

    Args: as :func:`allocate`.

    Returns:
      ([G, A] bool feasible, reasons[g][a]: "" where feasible, else a short
      comma-separated reason, e.g. ``"life 310 < 900 cycles"``).
    """
    soh, energy, life = _check_inputs(apps, soh, energy_kwh, life_cycles)
    reasons: list[list[str]] = [[] for _ in range(len(soh))]
    for g in range(len(soh)):
        for a, app in enumerate(apps):
            why = []
            if soh[g] < app.entry_soh:
                why.append(f"SOH {soh[g]:.3g} < entry {app.entry_soh:.3g}")
            if soh[g] <= app.end_of_life_soh:
                why.append(f"SOH {soh[g]:.3g} <= end of life {app.end_of_life_soh:.3g}")
            if life[g, a] < app.required_cycles:
                why.append(f"life {life[g, a]:.6g} < {app.required_cycles:.6g} cycles")
            if tested_c_rate is not None and app.c_rate > tested_c_rate:
                why.append(f"C-rate {app.c_rate:g} > tested {tested_c_rate:g}")
            if energy[g] > app.demand_kwh:
                why.append(f"energy {energy[g]:.3g} kWh > demand {app.demand_kwh:.3g}")
            if app.value <= recycling_value:
                why.append(f"value {app.value:g} <= recycling {recycling_value:g}")
            reasons[g].append(", ".join(why))
    ok = np.array([[not r for r in row] for row in reasons], bool).reshape(life.shape)
    return ok, reasons


@dataclasses.dataclass(frozen=True)
class Allocation:
    """Result of :func:`allocate`.

    Attributes:
      table: one row per group: ``group``, ``application`` (``"recycle"`` when
        none), ``energy_kwh``, ``value`` (the group's served value: application
        or recycling value x energy), ``refused`` (``"app: reason; ..."`` for
        every application the group was not feasible for).
      served_value: sum of ``table.value``.
      feasible: [G, A] bool, as :func:`feasibility`.
    """

    table: pd.DataFrame
    served_value: float
    feasible: np.ndarray


def allocate(apps: Sequence[Application], soh: np.ndarray, energy_kwh: np.ndarray,
             life_cycles: np.ndarray, *, groups: Sequence | None = None,
             tested_c_rate: float | None = 1.0, recycling_value: float = 0.0) -> Allocation:
    """The value-maximising assignment of groups to applications (module docstring).

    Args:
      apps: the A applications (e.g. :func:`load_catalogue`).
      soh: [G] SOH of each group: its weakest cell's capacity / nominal.
      energy_kwh: [G] usable energy of each group (e.g. :func:`usable_energy_kwh`).
      life_cycles: [G, A] cycles each group lasts until application a's
        end-of-life SOH, at the confidence bound the caller chose (e.g. the
        lower 90 % bound; :func:`life_to_threshold` on the lower trajectory of
        the group's weakest cell).
      groups: [G] group labels for the table (default 0 .. G-1).
      tested_c_rate: C-rate the cells' life was measured at (the LSD cells:
        about 1C); applications above it are refused.  None: no such check.
      recycling_value: value of one kWh recycled (same scale as ``value``).

    Returns:
      :class:`Allocation`.

    Raises:
      RuntimeError: the solver did not report an optimum.
    """
    soh, energy, life = _check_inputs(apps, soh, energy_kwh, life_cycles)
    ok, reasons = feasibility(apps, soh, energy, life, tested_c_rate=tested_c_rate,
                              recycling_value=recycling_value)
    num_groups = len(soh)
    choice = np.full(num_groups, -1)
    pairs = np.argwhere(ok)  # [P, 2] (g, a) of the variables
    if len(pairs):
        gain = np.array([(apps[a].value - recycling_value) * energy[g] for g, a in pairs])
        one_each = np.zeros((num_groups, len(pairs)))
        one_each[pairs[:, 0], np.arange(len(pairs))] = 1.0
        rows = [LinearConstraint(one_each, -np.inf, 1.0)]
        limited = [a for a in range(len(apps)) if math.isfinite(apps[a].demand_kwh)]
        if limited:
            use = np.zeros((len(limited), len(pairs)))
            for r, a in enumerate(limited):
                on = pairs[:, 1] == a
                use[r, on] = energy[pairs[on, 0]]
            rows.append(LinearConstraint(use, -np.inf, [apps[a].demand_kwh for a in limited]))
        # scaled to O(1) so that the solver's absolute tolerances stay small beside it
        scale = gain.max() if gain.max() > 0 else 1.0
        res = milp(-gain / scale, integrality=np.ones(len(pairs)), bounds=Bounds(0, 1),
                   constraints=rows, options={"mip_rel_gap": 0.0})
        if res.status != 0 or res.x is None:
            raise RuntimeError(f"allocation MILP not solved: {res.message}")
        for (g, a), x in zip(pairs, res.x, strict=True):
            if x > 0.5:
                choice[g] = a
    names = [apps[a].name if a >= 0 else RECYCLE for a in choice]
    per_kwh = np.array([apps[a].value if a >= 0 else recycling_value for a in choice])
    refused = ["; ".join(f"{app.name}: {reasons[g][a]}" for a, app in enumerate(apps)
                         if reasons[g][a]) for g in range(num_groups)]
    table = pd.DataFrame({
        "group": list(groups) if groups is not None else np.arange(num_groups),
        "application": names, "energy_kwh": energy, "value": per_kwh * energy,
        "refused": refused,
    })
    return Allocation(table=table, served_value=float(table.value.sum()), feasible=ok)


def _check_inputs(apps: Sequence[Application], soh, energy_kwh, life_cycles):
    """(soh [G], energy [G], life [G, A]) as float arrays; ValueError on wrong shapes."""
    soh = np.asarray(soh, np.float64)
    energy = np.asarray(energy_kwh, np.float64)
    life = np.asarray(life_cycles, np.float64)
    if soh.ndim != 1 or energy.shape != soh.shape:
        raise ValueError(f"soh {soh.shape} and energy_kwh {energy.shape} must both be [G]")
    if life.shape != (len(soh), len(apps)):
        raise ValueError(f"life_cycles {life.shape} must be [G, A] = {(len(soh), len(apps))}")
    if not np.isfinite(soh).all() or not np.isfinite(energy).all() or (energy < 0).any():
        raise ValueError("soh and energy_kwh must be finite, energy_kwh >= 0")
    if np.isnan(life).any():
        raise ValueError("life_cycles holds NaN")
    return soh, energy, life
