"""Readers for the published iMOE per-cell CSV files (UL, LSD, TPSL) and their splits.

One file holds one cell, one row per cycle (see ``shared/data/README.md``,
sections 2 and 3).  :func:`load_cell_file` turns a file into a
:class:`~slbjax.data.cells.Cell`: capacities in Ah, Q-V curves re-based to
start at 0 on a known voltage grid, the published quirks corrected and
recorded in ``Cell.notes``, and a per-row ``valid`` mask.

Parsing is vectorised (one ``str.split`` over a whole list column), and parsed
cells are cached on disk (``$SLBJAX_CACHE`` or ``~/.cache/slbjax``, folder
``cells/``) keyed by absolute path, size and modification time, so a second
load of a file is a single ``.npz`` read.  Every problem with a file is
reported as a :class:`~slbjax.errors.DataError` that names the file, the
0-based data row and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax import provenance
from slbjax.data import plausible
from slbjax.data.cells import QV_POINTS, Cell
from slbjax.errors import DataError, csv_problem

__all__ = [
    "DATASETS",
    "FORMAT_COLUMNS",
    "SPLITS",
    "SplitCells",
    "find_cell_files",
    "load_cell_file",
    "load_split",
    "split_files",
]

DATASETS = ("UL", "LSD", "TPSL")

# Columns each format must have (extra columns are ignored).  TPSL's
# ``Max_Charge_Capacity(Ah)`` is published but not used, so it is not required.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "UL": (
        "Cycle",
        "Charge_Current",
        "Discharge_Current",
        "Temperature",
        "Capacity_Increment",
        "Relaxation_Voltage",
        "Discharge_Capacity",
    ),
    "LSD": (
        "Cycle",
        "Charge_Current",
        "Discharge_Current",
        "Temperature",
        "Capacity_Increment",
        "Relaxation_Voltage",
        "Discharge_Capacity",
        "Start_Voltage",
        "End_Voltage",
    ),
    "TPSL": (
        "Cycle_Index",
        "QV_Curve",
        "Charge_Current(A)",
        "Temperture",
        "Discharge_Current(A)",
        "Max_Discharge_Capacity(Ah)",
    ),
}

UL_GRID = (3.6, 4.15)  # assumed by the authors; the true UL grid is not recorded
TPSL_GRID = (3.6, 4.15)  # TPSL's grid changes per cycle inside this range
AUTHORS_LSD_GRID = (3.6, 4.1)  # what the reference loader assumes for LSD (wrong)

RELAXATION_MIN_POINTS = 3
RELAXATION_BAND_V = (2.0, 4.5)
QV_OUTLIER_HALF_WINDOW = 5  # neighbours on each side used by the Q-V outlier test
QV_OUTLIER_TOLERANCE = 0.25  # relative distance that makes a row an outlier

_CACHE_VERSION = "imoe-cell-v2"
_UL_NAME = re.compile(r"^CY(\d+)-(\d+)_(\d+)-#(\d+)\.csv$")


# --------------------------------------------------------------------------- #
# Parsing helpers (all vectorised over rows; slow paths only to locate errors)
# --------------------------------------------------------------------------- #


def _read_table(path: Path) -> pd.DataFrame:
    """Reads a CSV as strings; any reader failure becomes a DataError."""
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a folder, expected a .csv file of one cell")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError(
            path, "file is empty, expected a header row and one row per cycle"
        ) from None
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        row = int(m.group(1)) - 2 if m else None
        raise DataError(path, f"not a valid CSV table ({csv_problem(exc)})", row=row) from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file ({exc.reason})") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(path, "has a header but no data rows, expected one row per cycle")
    return df


def _detect_format(path: Path, columns: Sequence[str], dataset: str | None) -> str:
    """Returns "UL", "LSD" or "TPSL" from the header (or checks the given one)."""
    have = set(columns)
    missing = {name: [c for c in cols if c not in have] for name, cols in FORMAT_COLUMNS.items()}
    if dataset is not None:
        key = dataset.upper()
        if key not in FORMAT_COLUMNS:
            raise DataError(
                path, f"unknown dataset {dataset!r}, expected one of {', '.join(DATASETS)}"
            )
        if missing[key]:
            raise DataError(
                path,
                f"header does not match the {key} format: missing column(s) "
                f"{', '.join(missing[key])}; found {', '.join(columns)}",
            )
        return key
    for key in ("LSD", "UL", "TPSL"):  # LSD before UL: LSD columns are a superset
        if not missing[key]:
            return key
    detail = "; ".join(f"{k} lacks {', '.join(v)}" for k, v in missing.items())
    raise DataError(
        path, f"unknown header ({', '.join(columns)}): not a UL, LSD or TPSL file ({detail})"
    )


def _cycle_at(df: pd.DataFrame, i: int) -> int | None:
    """The cycle number row ``i`` records, if its cycle column holds an integer there."""
    for name in ("Cycle", "Cycle_Index"):
        if name in df.columns:
            try:
                value = float(df[name].iat[i])
            except (ValueError, IndexError):
                return None
            return int(value) if np.isfinite(value) and value == round(value) else None
    return None


def _bad(path: Path, df: pd.DataFrame, problem: str, i: int, field: str | None = None) -> DataError:
    """A DataError at data row ``i``, with the cycle number of that row."""
    return DataError(path, problem, row=i, field=field, cycle=_cycle_at(df, i))


def _failer(path: Path, df: pd.DataFrame, cycle: np.ndarray):
    """``fail(field)(problem, row)`` -> DataError at that row (or the whole file for None)."""

    def for_field(field: str):
        def fail(problem: str, row: int | None) -> DataError:
            if row is None:
                return DataError(path, problem, field=field)
            return DataError(path, problem, row=row, field=field, cycle=int(cycle[row]))

        return fail

    return for_field


def _scalars(path: Path, df: pd.DataFrame, field: str, *, integer: bool = False) -> np.ndarray:
    """[N] float64 (or int64) values of a scalar column, all finite."""
    text = df[field].to_numpy(dtype=str)
    try:
        values = text.astype(np.float64)
    except ValueError:
        for i, item in enumerate(text):
            try:
                float(item)
            except ValueError:
                kind = "an integer" if integer else "a number"
                raise _bad(path, df, f"expected {kind}, got {str(item)!r}", i, field) from None
        raise  # pragma: no cover - numpy and float() disagree
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise _bad(path, df, f"expected a finite number, got {str(text[i])!r}", i, field)
    if integer:
        if (values != np.round(values)).any():
            i = int(np.argmax(values != np.round(values)))
            raise _bad(path, df, f"expected an integer, got {str(text[i])!r}", i, field)
        return values.astype(np.int64)
    return values


def _lists(
    path: Path, df: pd.DataFrame, field: str, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Parses a list-valued column such as ``"[0.0, 1.5, 2.5]"`` in one pass.

    A token that is not a number is named before a list of the wrong length is.

    Returns:
      flat: [sum(lengths)] float64 values of all rows, concatenated.
      lengths: [N] int64 number of values per row.
    """
    col = df[field].str.strip()
    bracketed = (col.str.startswith("[") & col.str.endswith("]")).to_numpy()
    if not bracketed.all():
        i = int(np.argmin(bracketed))
        raise _bad(
            path, df,
            f"expected a bracketed list of numbers such as '[0.0, 1.5]', got {_short(col.iloc[i])!r}",
            i, field,
        )
    inner = col.str.slice(1, -1).str.strip()
    empty = (inner == "").to_numpy()
    if empty.any():
        i = int(np.argmax(empty))
        want = f"{length} values" if length else "at least one value"
        raise _bad(path, df, f"empty list, expected {want}", i, field)
    lengths = inner.str.count(",").to_numpy(dtype=np.int64) + 1
    try:
        flat = np.array(",".join(inner).split(","), dtype=np.float64)
    except ValueError:
        _raise_first_bad_list(path, df, inner, field)
        raise  # pragma: no cover
    if length is not None and (lengths != length).any():
        i = int(np.argmax(lengths != length))
        raise _bad(path, df, f"list has {lengths[i]} values, expected exactly {length}", i, field)
    bad = ~np.isfinite(flat)
    if bad.any():
        k = int(np.argmax(bad))
        ends = np.cumsum(lengths)
        i = int(np.searchsorted(ends, k, side="right"))
        j = k - (int(ends[i - 1]) if i else 0)
        raise _bad(path, df, f"value {j + 1} of the list is {flat[k]}, expected finite numbers",
                   i, field)
    return flat, lengths


def _raise_first_bad_list(path: Path, df: pd.DataFrame, inner: pd.Series, field: str) -> None:
    """Slow path: finds the row and the token that is not a number and raises."""
    for i, text in enumerate(inner):
        for j, token in enumerate(text.split(",")):
            try:
                float(token)
            except ValueError:
                raise _bad(path, df, f"value {j + 1} of the list is {token.strip()!r}, expected a "
                           "number", i, field) from None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split_ragged(flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    """Splits concatenated values back into one array per row."""
    return tuple(np.split(flat, np.cumsum(lengths)[:-1]))


# --------------------------------------------------------------------------- #
# Quirk handling and validity
# --------------------------------------------------------------------------- #


def _rate_code(code: str) -> float:
    """Decodes a UL rate code: ``"05"`` -> 0.5, ``"025"`` -> 0.25, ``"1"`` -> 1.0."""
    if code.startswith("0"):
        return float("0." + code[1:])
    return float(int(code))


def ul_conditions_from_name(name: str) -> tuple[float, float, float] | None:
    """(temperature degC, charge C-rate, discharge C-rate) from ``CY<T>-<c>_<d>-#<n>.csv``.

    Returns None if the file name does not follow that pattern.
    """
    m = _UL_NAME.match(name)
    if m is None:
        return None
    return float(m.group(1)), _rate_code(m.group(2)), _rate_code(m.group(3))


def _apply_ul_name(
    name: str,
    charge: np.ndarray,
    discharge: np.ndarray,
    temperature: np.ndarray,
    notes: list[str],
    warnings_: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replaces UL load columns by the values encoded in the file name (quirk 3).

    A charge rate column holding the published notebook's mis-parse of the code
    (the code read as tenths: 2.5 for ``025``, 0.1 for ``1``) is noted; any other
    disagreement between a column and the name is a warning: the file may be
    named for another condition than the one it records.
    """
    parsed = ul_conditions_from_name(name)
    if parsed is None:
        notes.append(
            f"file name {name!r} does not follow CY<T>-<c>_<d>-#<n>.csv: kept the "
            "Charge_Current/Discharge_Current/Temperature columns as published"
        )
        return charge, discharge, temperature
    misparsed_charge = int(_UL_NAME.match(name).group(2)) / 10.0
    out = []
    for label, column, value, known in zip(
        ("Charge_Current", "Discharge_Current", "Temperature"),
        (charge, discharge, temperature),
        (parsed[1], parsed[2], parsed[0]),
        (misparsed_charge, None, None),
        strict=True,
    ):
        if not np.allclose(column, value):
            found = ", ".join(f"{v:g}" for v in np.unique(column)[:5])
            if known is not None and np.allclose(column, known):
                notes.append(
                    f"{label} column holds {found} but the file name says {value:g}; "
                    f"used {value:g} from the file name (the published notebook mis-parses "
                    "rate codes such as 025 and 1)"
                )
            else:
                warnings_.append(
                    f"{label} column holds {found} but the file name says {value:g}; "
                    f"used {value:g} from the file name: check that the file is named for the "
                    "condition it records"
                )
        out.append(np.full_like(column, value, dtype=np.float64))
    return out[0], out[1], out[2]


def qv_outlier_rows(last: np.ndarray) -> np.ndarray:
    """Flags rows whose Q-V end value is far from every nearby row.

    Rule: for row i take the last Q-V values (total charge gained in the voltage
    window) of the up to 10 rows i-5..i+5 other than i.  Row i is an outlier if
    its distance to the *closest* of them exceeds 25 % of their median.

    A plain "distance to the rolling median" test cannot be used: LSD alternates
    every 5th cycle (the charge after the slow 0.5 discharge gains up to 4x more
    charge in the 3.8-4.1 V window late in life), so hundreds of genuine rows
    differ from their neighbours' median by > 25 %.  The closest-neighbour
    distance is small for such periodic rows (the same-phase row 5 cycles away
    is similar) and for load changes lasting several cycles (TPSL-Arbitrary),
    but large for an isolated spike or truncated curve such as
    ``UL-NCA/CY45-05_1-#15.csv`` cycle 220 (3,027 mAh against ~1,710 mAh).

    Args:
      last: [N] last Q-V value of each row (any unit).

    Returns:
      [N] bool, True for outlier rows.
    """
    k = QV_OUTLIER_HALF_WINDOW
    n = last.shape[0]
    if n < 2:
        return np.zeros(n, dtype=bool)
    padded = np.full(n + 2 * k, np.nan)
    padded[k : k + n] = last
    window = np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1).copy()
    window[:, k] = np.nan  # exclude the row itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(window, axis=1)
        closest = np.nanmin(np.abs(window - last[:, None]), axis=1)
    return (median > 0) & (closest > QV_OUTLIER_TOLERANCE * median)


def _relaxation_invalid(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[N] bool: records with < 3 points or any value outside 2.0..4.5 V."""
    outside = (flat < RELAXATION_BAND_V[0]) | (flat > RELAXATION_BAND_V[1])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    any_outside = np.add.reduceat(outside.astype(np.int64), starts) > 0
    return (lengths < RELAXATION_MIN_POINTS) | any_outside


def _rows_text(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def _clean_qv(qv: np.ndarray, cycle: np.ndarray, notes: list[str]) -> np.ndarray:
    """Re-bases to qv[:, 0] == 0 and makes decreasing rows monotone (noted)."""
    qv = qv - qv[:, :1]
    decreasing = np.nonzero((np.diff(qv, axis=1) < 0).any(axis=1))[0]
    if decreasing.size:
        drop = float(np.max(np.maximum.accumulate(qv[decreasing], axis=1) - qv[decreasing]))
        notes.append(
            f"Q-V curve slightly decreasing in row(s) {_rows_text(decreasing)} "
            f"(cycle(s) {_rows_text(cycle[decreasing])}; largest drop {drop:.4g} Ah): "
            "made monotone with a running maximum"
        )
        qv = np.maximum.accumulate(qv, axis=1)
    return qv


def _validity(
    qv: np.ndarray,
    relax_flat: np.ndarray | None,
    relax_len: np.ndarray | None,
    cycle: np.ndarray,
    notes: list[str],
) -> np.ndarray:
    """[N] bool validity mask; each kind of invalid row is recorded in notes."""
    outlier = qv_outlier_rows(qv[:, -1])
    valid = ~outlier
    if outlier.any():
        rows = np.nonzero(outlier)[0]
        notes.append(
            f"Q-V outlier row(s) {_rows_text(rows)} (cycle(s) {_rows_text(cycle[rows])}): "
            "end value more than 25 % away from every one of the 10 nearest rows; marked invalid"
        )
    if relax_flat is not None and relax_len is not None:
        broken = _relaxation_invalid(relax_flat, relax_len)
        if broken.any():
            rows = np.nonzero(broken)[0]
            notes.append(
                f"relaxation record broken in row(s) {_rows_text(rows)} "
                f"(cycle(s) {_rows_text(cycle[rows])}): fewer than {RELAXATION_MIN_POINTS} "
                f"points or values outside {RELAXATION_BAND_V[0]}..{RELAXATION_BAND_V[1]} V; "
                "marked invalid"
            )
        valid &= ~broken
    return valid


# --------------------------------------------------------------------------- #
# Per-format readers
# --------------------------------------------------------------------------- #


def _cell_name(path: Path, dataset: str) -> str:
    if dataset == "LSD":
        return f"LSD-{path.stem}"
    if dataset == "TPSL":
        if path.stem == "combined_data":
            group = path.parent.parent.name
            prefix = group if group.startswith("TPSL") else "TPSL"
            return f"{prefix}-{path.parent.name}"
        return path.stem
    return path.stem


def _read_ul_lsd(path: Path, df: pd.DataFrame, dataset: str) -> dict:
    notes: list[str] = []
    cycle = _scalars(path, df, "Cycle", integer=True)
    charge = _scalars(path, df, "Charge_Current")
    discharge = _scalars(path, df, "Discharge_Current")
    temperature = _scalars(path, df, "Temperature")
    capacity = _scalars(path, df, "Discharge_Capacity")
    qv_flat, _ = _lists(path, df, "Capacity_Increment", QV_POINTS)
    relax_flat, relax_len = _lists(path, df, "Relaxation_Voltage")
    qv = qv_flat.reshape(-1, QV_POINTS)
    fail = _failer(path, df, cycle)
    warns: list[str] = []
    plausible.cycles_increasing(cycle, fail("Cycle"))
    plausible.capacity(capacity, "mAh" if dataset == "UL" else "Ah", fail("Discharge_Capacity"))
    plausible.qv_scale(qv[:, -1] - qv[:, 0], capacity, fail("Capacity_Increment"))
    plausible.relaxation_unit(relax_flat, fail("Relaxation_Voltage"))
    # the columns as recorded, before a UL file name replaces them: a slip is still a slip
    warns += plausible.temperature(temperature, fail("Temperature"))
    warns += plausible.c_rate(charge, "Charge_Current", fail("Charge_Current"))
    warns += plausible.c_rate(discharge, "Discharge_Current", fail("Discharge_Current"))
    if dataset == "UL":
        qv, capacity = qv / 1000.0, capacity / 1000.0
        notes.append("Capacity_Increment and Discharge_Capacity converted from mAh to Ah")
        charge, discharge, temperature = _apply_ul_name(
            path.name, charge, discharge, temperature, notes, warns
        )
        grid = np.linspace(*UL_GRID, QV_POINTS)
        notes.append(
            "UL voltage grid is not recorded: assumed linspace(3.6, 4.15, 50) as the authors do"
        )
    else:
        grid = _lsd_grid(path, df, fail)
        notes.append(
            f"LSD Q-V grid is the recorded linspace(Start_Voltage, End_Voltage, 50) = "
            f"{grid[0]:g}..{grid[-1]:g} V (the reference loader wrongly assumes "
            f"{AUTHORS_LSD_GRID[0]}..{AUTHORS_LSD_GRID[1]} V)"
        )
    qv = _clean_qv(qv, cycle, notes)
    valid = _validity(qv, relax_flat, relax_len, cycle, notes)
    return dict(
        cycle=cycle,
        qv=qv,
        voltage_grid=grid,
        relaxation=_split_ragged(relax_flat, relax_len),
        charge_current=charge,
        discharge_current=discharge,
        temperature=temperature,
        capacity_ah=capacity,
        valid=valid,
        notes=tuple(notes),
        warnings=tuple(f"{path}: {w}" for w in warns),
    )


def _lsd_grid(path: Path, df: pd.DataFrame, fail) -> np.ndarray:
    """[50] LSD voltage grid from Start_Voltage/End_Voltage (same in every row)."""
    ends = []
    for field in ("Start_Voltage", "End_Voltage"):
        v = _scalars(path, df, field)
        plausible.voltage(float(v[0]), field, fail(field))
        differs = v != v[0]
        if differs.any():
            i = int(np.argmax(differs))
            raise _bad(path, df, f"is {v[i]:g} but line 2 has {v[0]:g}; expected the same value "
                       "in every row (a cell has one Q-V voltage grid)", i, field)
        ends.append(float(v[0]))
    if not ends[0] < ends[1]:
        raise _bad(path, df, f"Start_Voltage {ends[0]:g} V is not below End_Voltage {ends[1]:g} V",
                   0, "Start_Voltage")
    return np.linspace(ends[0], ends[1], QV_POINTS)


def _read_tpsl(path: Path, df: pd.DataFrame) -> dict:
    notes: list[str] = []
    cycle = _scalars(path, df, "Cycle_Index", integer=True)
    charge = _scalars(path, df, "Charge_Current(A)")
    discharge = _scalars(path, df, "Discharge_Current(A)")
    temperature = _scalars(path, df, "Temperture")
    capacity = _scalars(path, df, "Max_Discharge_Capacity(Ah)")
    qv_flat, _ = _lists(path, df, "QV_Curve", QV_POINTS)
    qv = qv_flat.reshape(-1, QV_POINTS)
    fail = _failer(path, df, cycle)
    plausible.cycles_increasing(cycle, fail("Cycle_Index"), restarts=True)
    plausible.capacity(capacity, "Ah", fail("Max_Discharge_Capacity(Ah)"))
    plausible.qv_scale(qv[:, -1] - qv[:, 0], capacity, fail("QV_Curve"))
    warns = plausible.temperature(temperature, fail("Temperture"))
    notes.append(
        "QV_Curve is an absolute charge counter: subtracted its first value per row "
        f"(first values {qv[:, 0].min():.3g}..{qv[:, 0].max():.3g} Ah)"
    )
    if (discharge < 0).any():
        notes.append("Discharge_Current(A) is negative in the file: stored its absolute value")
    discharge = np.abs(discharge)
    notes.append(
        "TPSL Q-V grid changes per cycle (min..max charging voltage inside 3.6..4.15 V): "
        "assumed linspace(3.6, 4.15, 50) as the authors do; currents are in A"
    )
    restarts = np.nonzero(np.diff(cycle) < 0)[0]
    if restarts.size:
        notes.append(
            f"Cycle_Index restarts after row(s) {_rows_text(restarts)} (stacked raw files); "
            "kept as published"
        )
    qv = _clean_qv(qv, cycle, notes)
    valid = _validity(qv, None, None, cycle, notes)
    return dict(
        cycle=cycle,
        qv=qv,
        voltage_grid=np.linspace(*TPSL_GRID, QV_POINTS),
        relaxation=None,
        charge_current=charge,
        discharge_current=discharge,
        temperature=temperature,
        capacity_ah=capacity,
        valid=valid,
        notes=tuple(notes),
        warnings=tuple(f"{path}: {w}" for w in warns),
    )


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #


def default_cache_dir() -> Path:
    """``$SLBJAX_CACHE`` if set, else ``~/.cache/slbjax``."""
    env = os.environ.get("SLBJAX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slbjax"


def _cache_file(path: Path, cache_dir: Path) -> tuple[Path, str]:
    stat = path.stat()
    key = f"{_CACHE_VERSION}|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return cache_dir / "cells" / f"{digest}.npz", key


def _cache_load(file: Path, key: str) -> Cell | None:
    """The cached Cell, or None if absent, stale or unreadable (then it is rebuilt)."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            relax = None
            if bool(z["has_relaxation"]):
                relax = _split_ragged(z["relax_flat"], z["relax_len"])
            return Cell(
                name=str(z["name"]),
                source=str(z["source"]),
                dataset=str(z["dataset"]),
                cycle=z["cycle"],
                qv=z["qv"],
                voltage_grid=z["voltage_grid"],
                relaxation=relax,
                charge_current=z["charge_current"],
                discharge_current=z["discharge_current"],
                temperature=z["temperature"],
                capacity_ah=z["capacity_ah"],
                valid=z["valid"].astype(bool),
                notes=tuple(str(n) for n in z["notes"]),
                warnings=tuple(str(n) for n in z["warnings"]),
            )
    except Exception:  # noqa: BLE001 - any damage to a cache entry means "rebuild it"
        return None


def _cache_save(file: Path, key: str, cell: Cell) -> None:
    """Writes the entry atomically; a cache that cannot be written is skipped."""
    arrays = {
        name: getattr(cell, name)
        for name in (
            "cycle",
            "qv",
            "voltage_grid",
            "charge_current",
            "discharge_current",
            "temperature",
            "capacity_ah",
            "valid",
        )
    }
    relax = cell.relaxation or ()
    arrays.update(
        key=np.array(key),
        name=np.array(cell.name),
        source=np.array(cell.source),
        dataset=np.array(cell.dataset),
        notes=np.array(cell.notes, dtype=str),
        warnings=np.array(cell.warnings, dtype=str),
        has_relaxation=np.array(cell.relaxation is not None),
        relax_flat=np.concatenate(relax) if relax else np.zeros(0),
        relax_len=np.array([len(r) for r in relax], dtype=np.int64),
    )
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def load_cell_file(
    path: str | os.PathLike, dataset: str | None = None, *, cache: bool | str | os.PathLike = True
) -> Cell:
    """Loads one published iMOE cell file.

    The format is detected from the header when ``dataset`` is None: UL
    (capacities in mAh, converted to Ah), LSD (UL columns plus
    ``Start_Voltage``/``End_Voltage``, Ah) or TPSL (``Cycle_Index``,
    ``QV_Curve``, ..., ``Temperture``).  Corrections applied:

    * UL: charge/discharge rate and temperature are taken from the file name
      ``CY<T>-<c>_<d>-#<n>.csv`` (the files hold 2.5 instead of 0.25 and 0.1
      instead of 1.0 for two conditions); grid ``linspace(3.6, 4.15, 50)``.
    * LSD: the true grid ``linspace(Start_Voltage, End_Voltage, 50)``
      (3.8..4.1 V), not the 3.6..4.1 V the authors assume.
    * TPSL: ``QV_Curve`` re-based to 0, discharge current made positive, grid
      ``linspace(3.6, 4.15, 50)``.
    * All: slightly decreasing Q-V rows made monotone; ``valid`` is False for
      Q-V outlier rows (see :func:`qv_outlier_rows`) and for relaxation records
      with < 3 points or values outside 2.0..4.5 V.  All rows are kept.

    Args:
      path: the CSV file.
      dataset: "UL", "LSD" or "TPSL" to force a format; None to detect it.
      cache: True for the default cache folder (``$SLBJAX_CACHE`` or
        ``~/.cache/slbjax``), a folder to use instead, or False for no cache.

    Returns:
      The :class:`Cell` (N rows, capacities in Ah, ``qv`` [N, 50]).

    Raises:
      DataError: missing/empty file, unknown header, a non-numeric, NaN or
        infinite value, or a list of the wrong length (naming file, row, field).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    provenance.record(path)
    cache_file = key = None
    if cache is not False and path.is_file():
        cache_dir = default_cache_dir() if cache is True else Path(cache)
        cache_file, key = _cache_file(path, cache_dir)
        cell = _cache_load(cache_file, key)
        # a forced format that differs from the cached one is parsed (and reported) afresh
        if cell is not None and (dataset is None or cell.dataset == str(dataset).upper()):
            return cell
    cell = _parse_cell_file(path, dataset)
    if cache_file is not None and key is not None:
        _cache_save(cache_file, key, cell)
    return cell


def _parse_cell_file(path: Path, dataset: str | None) -> Cell:
    df = _read_table(path)
    fmt = _detect_format(path, list(df.columns), dataset)
    fields = _read_tpsl(path, df) if fmt == "TPSL" else _read_ul_lsd(path, df, fmt)
    return Cell(
        name=_cell_name(path, fmt),
        source=os.path.abspath(path),
        dataset=fmt,
        **fields,
    )


def find_cell_files(path: str | os.PathLike) -> list[Path]:
    """A single file, or every ``*.csv`` under a folder (recursive, natural order).

    Raises:
      DataError: the path does not exist, or a folder holds no ``.csv`` file.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise DataError(path, "not found, expected a .csv file or a folder of them")
    files = sorted((p for p in path.rglob("*.csv") if p.is_file()), key=_natural_key)
    if not files:
        raise DataError(path, "folder holds no .csv files")
    return files


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


# --------------------------------------------------------------------------- #
# Splits (the reference dataloader.py, plus the NCM / NCMNCA lists)
# --------------------------------------------------------------------------- #


def _ul(cond: str, nums) -> tuple[str, ...]:
    return tuple(f"{cond}-#{n}.csv" for n in nums)


def _ul_split(cond: str, train, val, test) -> dict[str, tuple[str, ...]]:
    return {"train": _ul(cond, train), "val": _ul(cond, val), "test": _ul(cond, test)}


def _lsd(nums) -> tuple[str, ...]:
    return tuple(f"{n}.csv" for n in nums)


def _tpsl(nums) -> tuple[str, ...]:
    return tuple(f"#{n}/combined_data.csv" for n in nums)


_R = range

# SPLITS[dataset][subset][condition][role] -> file names relative to the
# subset folder ``imoe/<folder>/`` (see _FOLDERS).  Order as in dataloader.py.
SPLITS: dict[str, dict[str, dict[str, dict[str, tuple[str, ...]]]]] = {
    "UL": {
        "NCA": {
            "CY45-05_1": _ul_split("CY45-05_1", _R(1, 18), (28, 25), (24, 26, 27, 22, 23)),
            "CY25-05_1": _ul_split(
                "CY25-05_1", (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13), (18, 19), (1, 14, 15, 16, 17, 12)
            ),
            "CY25-025_1": _ul_split("CY25-025_1", (1, 2, 3), (7,), (5, 6, 4)),
            "CY25-1_1": _ul_split("CY25-1_1", _R(1, 6), (6,), (7, 8, 9)),
            "CY35-05_1": _ul_split("CY35-05_1", (1,), (2,), (3,)),
        },
        "NCM": {
            "CY45-05_1": _ul_split("CY45-05_1", _R(1, 17), (28, 17), (24, 26, 27, 22, 23)),
            "CY25-05_1": _ul_split(
                "CY25-05_1",
                (1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16),
                (5, 17),
                _R(18, 24),
            ),
            "CY35-05_1": _ul_split("CY35-05_1", (1,), (2,), (3, 4)),
        },
        "NCMNCA": {
            cond: _ul_split(cond, (1,), (2,), (3,))
            for cond in ("CY25-05_1", "CY25-05_2", "CY25-05_4")
        },
    },
    "LSD": {
        "LSD": {
            "LSD": {
                "train": _lsd(
                    [*_R(1, 7), *_R(10, 24), *_R(28, 43), *_R(46, 61), 63, 64, 65, *_R(80, 84)]
                ),
                "val": _lsd([7, *_R(66, 75), 86, 87]),
                "test": _lsd([8, 9, *_R(24, 28), 43, 44, 45, *_R(75, 80), 84, 85, 88]),
            }
        }
    },
    "TPSL": {
        "Fixed": {
            "Fixed": {
                "train": _tpsl((6, 22, 26, 29, 32, 38, 41, 44, 49, 52, 53)),
                "val": _tpsl((45, 58)),
                "test": _tpsl((23, 35, 48, 57)),
            }
        },
        "Arbitrary": {
            "Arbitrary": {
                "train": _tpsl(
                    (1, 3, 7, 9, 14, 15, 17, 18, 20, 21, 24, 25, 27, 28, 30, 31, 34, 36, 37)
                    + (39, 40, 42, 46, 47, 50, 54, 55, 56, 59, 60, 74, 75, 76, 77, 67, 68, 69, 73)
                ),
                "val": _tpsl((66, 70)),
                "test": _tpsl((5, 8, 11, 12, 71, 72, 33, 43, 61, 62, 63, 64, 65)),
            }
        },
    },
}

_FOLDERS = {
    ("UL", "NCA"): "UL-NCA",
    ("UL", "NCM"): "UL-NCM",
    ("UL", "NCMNCA"): "UL-NCMNCA",
    ("LSD", "LSD"): "LSD",
    ("TPSL", "Fixed"): "TPSL-Fixed",
    ("TPSL", "Arbitrary"): "TPSL-Arbitrary",
}

ROLES = ("train", "val", "test")


def _resolve(dataset: str, subset: str | None, condition: str | None) -> tuple[str, str, str]:
    """Canonical (dataset, subset, condition) keys of SPLITS, or a DataError."""
    ds = dataset.upper() if isinstance(dataset, str) else dataset
    if ds not in SPLITS:
        raise DataError(None, f"unknown dataset {dataset!r}; valid datasets: {', '.join(SPLITS)}")
    if ds == "LSD":
        return "LSD", "LSD", "LSD"
    subsets = SPLITS[ds]
    match = {s.upper(): s for s in subsets}.get(str(subset).upper())
    if match is None:
        raise DataError(
            None,
            f"unknown {ds} subset {subset!r}; valid subsets: {', '.join(subsets)}",
        )
    if ds == "TPSL":
        return ds, match, match
    conditions = subsets[match]
    if condition not in conditions:
        raise DataError(
            None,
            f"unknown condition {condition!r} for UL-{match}; valid conditions: "
            f"{', '.join(conditions)}",
        )
    return ds, match, condition


def split_files(
    dataset: str, subset: str | None = None, condition: str | None = None
) -> dict[str, list[str]]:
    """Train/val/test file lists of the reference dataloader.

    Args:
      dataset: "UL", "LSD" or "TPSL".
      subset: UL "NCA"/"NCM"/"NCMNCA"; TPSL "Fixed"/"Arbitrary"; ignored for LSD.
      condition: UL condition such as "CY25-05_1"; ignored for LSD and TPSL.

    Returns:
      {"train": [...], "val": [...], "test": [...]}, paths relative to the data
      root, e.g. ``imoe/UL-NCA/CY25-05_1-#1.csv``, ``imoe/LSD/1.csv``,
      ``imoe/TPSL-Fixed/#6/combined_data.csv``.

    Raises:
      DataError: unknown dataset, subset or condition (lists the valid ones).
    """
    ds, sub, cond = _resolve(dataset, subset, condition)
    folder = _FOLDERS[(ds, sub)]
    roles = SPLITS[ds][sub][cond]
    return {role: [f"imoe/{folder}/{name}" for name in roles[role]] for role in ROLES}


@dataclasses.dataclass(frozen=True)
class SplitCells:
    """Cells of one split.  ``split["train"]`` works like a dict lookup.

    Attributes:
      train, val, test: loaded cells, in the reference order.
      missing: listed files (relative to the data root) that do not exist
        under the data folder; only ever non-empty for TPSL, whose published
        data hold one cell per condition.
    """

    train: list[Cell]
    val: list[Cell]
    test: list[Cell]
    missing: list[str] = dataclasses.field(default_factory=list)

    def __getitem__(self, role: str) -> list[Cell]:
        if role not in ROLES:
            raise KeyError(role)
        return getattr(self, role)


def check_split_files(root: Path, dataset: str, subset: str | None = None,
                      condition: str | None = None) -> tuple[dict[str, list[str]], list[str]]:
    """(files by role, the missing ones) of a reference split under ``root``, without
    reading them; raises DataError for a missing folder or missing UL / LSD files (for
    TPSL the caller decides, see :func:`load_split`)."""
    if not root.is_dir():
        raise DataError(root, "data folder not found (expected a folder holding imoe/)")
    files = split_files(dataset, subset, condition)
    ds = dataset.upper()
    missing = [rel for role in ROLES for rel in files[role] if not (root / rel).is_file()]
    if missing and ds != "TPSL":
        total = sum(len(v) for v in files.values())
        label = " ".join(str(x) for x in (ds, subset, condition) if x) if ds == "UL" else ds
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(
            root,
            f"{len(missing)} of the {total} file(s) of the {label} split are missing under this "
            f"data folder: {shown} (expected the layout of shared/data/README.md)",
        )
    return files, missing


def load_split(
    data_dir: str | os.PathLike,
    dataset: str,
    subset: str | None = None,
    condition: str | None = None,
    *,
    cache: bool | str | os.PathLike = True,
) -> SplitCells:
    """Loads the train/val/test cells of one reference split.

    Missing files: for UL and LSD any listed file that does not exist under
    ``data_dir`` is an error.  For TPSL the published data hold only one cell
    per condition (``#6`` Fixed, ``#1`` Arbitrary, both train), so the cells
    that exist are returned and the others are listed in ``missing``; the
    caller decides whether that is enough.

    Args:
      data_dir: folder holding ``imoe/`` (e.g. ``shared/data``).
      dataset, subset, condition: as in :func:`split_files`.
      cache: as in :func:`load_cell_file`.

    Returns:
      :class:`SplitCells`.

    Raises:
      DataError: unknown dataset/subset/condition, missing data folder, or
        missing UL/LSD files (all named), or any file problem.
    """
    root = Path(data_dir)
    files, missing = check_split_files(root, dataset, subset, condition)
    ds = dataset.upper()
    fmt = "UL" if ds == "UL" else ds
    cells = {
        role: [
            load_cell_file(root / rel, fmt, cache=cache)
            for rel in files[role]
            if rel not in missing
        ]
        for role in ROLES
    }
    return SplitCells(cells["train"], cells["val"], cells["test"], missing)
