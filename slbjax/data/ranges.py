"""What a run was trained on, as ranges, and whether a new cell lies inside them.

A run writes ``training_ranges.json`` into its folder: the minimum and maximum
over its training cells of the discharge capacity (Ah), of each channel of the
load (ambient temperature, charge and discharge current) and of each input
feature of the model.  ``predict`` and ``triage`` compare every input cell with
those ranges: a cell is *out of distribution* when one of its values lies
outside a training range widened on both sides by :data:`MARGIN` of the
range's width (a constant training value, such as one temperature, is not
widened: any other value was never seen).  The comparison is made per cell,
and its outcome is one line naming the fields and their values::

    LSD/3.csv: capacity 1.21-1.87 Ah outside the training range 2.95-3.52 Ah (UL-NCA CY25-05_1-trained run)

Runs written before the file existed have none; their predictions carry no
range check (:func:`read` returns None).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from slbjax.data.cells import Cell
from slbjax.data.features import FEATURE_NAMES_6, FEATURE_NAMES_12, physics_features, trim_soc
from slbjax.errors import RunDirError, SlbjaxError
from slbjax.rundir import write_json

RANGES_FILE = "training_ranges.json"
FORMAT = "slbjax-training-ranges-1"
MARGIN = 0.10
"""A range is widened by this share of its width on each side before a cell is compared."""
MAX_FEATURES_NAMED = 3  # features named in one warning; the rest are counted


class OutOfDistribution(SlbjaxError):
    """A cell outside the training ranges, with ``--refuse-out-of-distribution``."""

    @classmethod
    def for_cell(cls, warning: str) -> OutOfDistribution:
        return cls(f"{warning}; refused (--refuse-out-of-distribution): nothing was written")

    @classmethod
    def unchecked(cls, run_path) -> OutOfDistribution:
        """A run without recorded ranges: no cell can be shown to be inside them."""
        return cls(f"{run_path} holds no {RANGES_FILE} (a run trained before training ranges were "
                   "recorded): cells cannot be checked, so --refuse-out-of-distribution refuses "
                   "them all; nothing was written")


@dataclasses.dataclass(frozen=True)
class Field:
    """One recorded range: ``key`` in the file, ``label`` and ``unit`` as a warning says them."""

    key: str
    label: str
    unit: str
    lo: float
    hi: float

    @property
    def is_feature(self) -> bool:
        return self.key.startswith("feature:")

    def bounds(self, margin: float = MARGIN) -> tuple[float, float]:
        """The range widened by ``margin`` of its width (plus a rounding allowance)."""
        tol = margin * (self.hi - self.lo) + 1e-9 * max(1.0, abs(self.lo), abs(self.hi))
        return self.lo - tol, self.hi + tol


def span(values) -> tuple[float, float] | None:
    """(min, max) of the finite values, or None when there is none."""
    x = np.asarray(values, np.float64).ravel()
    x = x[np.isfinite(x)]
    return (float(x.min()), float(x.max())) if x.size else None


def _join(spans: Iterable[tuple[float, float] | None]) -> tuple[float, float] | None:
    got = [s for s in spans if s is not None]
    return (min(s[0] for s in got), max(s[1] for s in got)) if got else None


def current_unit(dataset: str) -> str:
    """Unit of a cell's currents: C-rate for UL, LSD and synthetic cells, A for TPSL."""
    return "A" if dataset == "TPSL" else "C"


LOAD_FIELDS = (("temperature_c", "temperature", "degC"), ("charge_current", "charge current", None),
               ("discharge_current", "discharge current", None))


def cell_spans(cell: Cell, rows: slice | np.ndarray | None = None) -> dict[str, tuple[float, float] | None]:
    """Capacity and load spans of ``cell`` (over ``rows``, default all)."""
    rows = slice(None) if rows is None else rows
    return {
        "capacity_ah": span(cell.capacity_ah[rows]),
        "temperature_c": span(cell.temperature[rows]),
        "charge_current": span(cell.charge_current[rows]),
        "discharge_current": span(cell.discharge_current[rows]),
    }


def feature_spans(names: Sequence[str], x: np.ndarray) -> dict[str, tuple[float, float] | None]:
    """``feature:<name>`` -> span of column j of ``x`` [rows, len(names)]."""
    x = np.asarray(x, np.float64).reshape(-1, len(names))
    return {f"feature:{n}": span(x[:, j]) for j, n in enumerate(names)}


def imoe_feature_names(num: int) -> tuple[str, ...]:
    return FEATURE_NAMES_12 if num == len(FEATURE_NAMES_12) else (
        FEATURE_NAMES_6 if num == len(FEATURE_NAMES_6) else tuple(f"f{j}" for j in range(num)))


def start_features(cell: Cell, soc_start: int) -> np.ndarray:
    """[valid rows, F] raw physics features of the rows an iMOE prediction can start from
    (what ``slbjax.inference.cell_inputs`` feeds the model)."""
    qv = trim_soc(cell.qv, soc_start)
    return physics_features(qv, cell.voltage_grid, cell.relaxation)[np.flatnonzero(cell.valid)]


def imoe_observed(cell: Cell, features: np.ndarray) -> dict[str, tuple[float, float] | None]:
    """What an iMOE prediction of ``cell`` reads: its capacity and load over the record and the
    features [valid rows, F] of its start rows."""
    names = imoe_feature_names(np.asarray(features).shape[-1])
    return {**cell_spans(cell), **feature_spans(names, features)}


@dataclasses.dataclass(frozen=True)
class TrainingRanges:
    """The ranges of a run's training data.

    Attributes:
      family: ``imoe`` or ``life``.
      trained_on: what the run was trained on, as a warning names it (``UL-NCA CY25-05_1``).
      cells: names of the training cells.
      fields: the ranges, capacity and load first, then the features.
      rows: which rows the ranges cover, in words.
    """

    family: str
    trained_on: str
    cells: tuple[str, ...]
    fields: tuple[Field, ...]
    rows: str = ""

    @classmethod
    def build(cls, family: str, trained_on: str, cells: Sequence[Cell],
              observed: Iterable[dict[str, tuple[float, float] | None]], rows: str = "") -> TrainingRanges:
        """Ranges from per-cell spans (``observed``: one dict per training cell, as
        :func:`imoe_observed` gives)."""
        spans: dict[str, list] = {}
        for obs in observed:
            for k, s in obs.items():
                spans.setdefault(k, []).append(s)
        unit_c = current_unit(cells[0].dataset) if cells else "C"
        fields = []
        for key, got in spans.items():
            s = _join(got)
            if s is None:
                continue
            if key.startswith("feature:"):
                label, unit = key.removeprefix("feature:"), ""
            elif key == "capacity_ah":
                label, unit = "capacity", "Ah"
            else:
                label, unit = next((lab, u or unit_c) for k, lab, u in LOAD_FIELDS if k == key)
            fields.append(Field(key, label, unit, s[0], s[1]))
        return cls(family, trained_on, tuple(c.name for c in cells), tuple(fields), rows)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "family": self.family, "trained_on": self.trained_on,
            "rows": self.rows, "margin": MARGIN, "cells": list(self.cells),
            "fields": {f.key: {"label": f.label, "unit": f.unit, "min": f.lo, "max": f.hi}
                       for f in self.fields},
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainingRanges:
        fields = tuple(Field(k, v["label"], v["unit"], float(v["min"]), float(v["max"]))
                       for k, v in d["fields"].items())
        return cls(d["family"], d["trained_on"], tuple(d.get("cells", ())), fields, d.get("rows", ""))

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / RANGES_FILE
        write_json(path, self.to_dict())
        return path

    def problems(self, observed: dict[str, tuple[float, float] | None]) -> list[str]:
        """What lies outside the widened ranges, in words (empty: in distribution)."""
        plain, feats = [], []
        for f in self.fields:
            s = observed.get(f.key)
            if s is None:
                continue
            lo, hi = f.bounds()
            if s[0] < lo or s[1] > hi:
                (feats if f.is_feature else plain).append((f, s))
        feats.sort(key=lambda fs: -_excess(*fs))  # the farthest outside first
        out = []
        for f, s in plain:
            obs, train = _fmt_pair(f, s)
            out.append(f"{f.label} {obs} outside the training range {train}")
        if feats:
            total = sum(f.is_feature for f in self.fields)
            named = []
            for f, s in feats[:MAX_FEATURES_NAMED]:
                obs, train = _fmt_pair(f, s)
                named.append(f"{f.label} {obs} (training {train})")
            more = f", +{len(feats) - MAX_FEATURES_NAMED} more" if len(feats) > MAX_FEATURES_NAMED else ""
            out.append(f"{len(feats)} of {total} input features outside their training ranges: "
                       + ", ".join(named) + more)
        return out

    def warning(self, where: str, observed: dict[str, tuple[float, float] | None]) -> str | None:
        """One line naming what of the cell at ``where`` lies outside, or None."""
        found = self.problems(observed)
        if not found:
            return None
        return f"{where}: {'; '.join(found)} ({self.trained_on}-trained run)"

    def describe(self) -> str:
        """What a check compares with, for a note on stderr."""
        return (f"{len(self.fields)} training ranges of {len(self.cells)} {self.trained_on} "
                f"training cells, each widened by {MARGIN:.0%} of its width")


def _excess(f: Field, s: tuple[float, float]) -> float:
    """How far ``s`` lies outside the training range, in range widths."""
    return max(f.lo - s[0], s[1] - f.hi) / max(f.hi - f.lo, 1e-12 * max(1.0, abs(f.hi)))


def _fmt_pair(f: Field, s: tuple[float, float]) -> tuple[str, str]:
    """The observed span and the training range as text, with enough significant digits
    (3 to 6) that the side lying outside reads differently from the training bound."""
    lo, hi = f.bounds()
    sides = [(s[0], f.lo)] if s[0] < lo else []
    sides += [(s[1], f.hi)] if s[1] > hi else []
    sides += [pair for pair in ((f.lo, f.hi), s) if pair[0] != pair[1]]  # a range stays a range
    d = next((d for d in range(3, 7) if all(f"{a:.{d}g}" != f"{b:.{d}g}" for a, b in sides)), 6)
    return _fmt_span(s, f.unit, d), _fmt_span((f.lo, f.hi), f.unit, d)


def _fmt_span(s: tuple[float, float], unit: str, digits: int) -> str:
    lo, hi = (f"{v:.{digits}g}" for v in s)
    if lo == hi:
        text = lo
    else:  # "a-b" unless a minus sign or an exponent would make the dash ambiguous
        text = f"{lo} to {hi}" if s[0] < 0 or s[1] < 0 or "e" in lo + hi else f"{lo}-{hi}"
    return text + {"degC": " °C", "": ""}.get(unit, f" {unit}")


def read(run_dir: str | Path) -> TrainingRanges | None:
    """The run's training ranges, or None when it has no ``training_ranges.json`` (older runs).

    Raises:
      RunDirError: the file exists but cannot be read.
    """
    path = Path(run_dir) / RANGES_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        return TrainingRanges.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunDirError(f"{path} cannot be read ({e}); remove it to predict without a range "
                          "check") from None


def relative_source(file: Path, root: Path) -> str:
    """``file`` relative to the input ``root`` (its name when ``root`` is the file itself)."""
    file, root = Path(file), Path(root)
    if root.is_file() or file == root:
        return file.name
    try:
        return file.relative_to(root).as_posix()
    except ValueError:
        return str(file)
