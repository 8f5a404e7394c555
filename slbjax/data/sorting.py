"""Loaders of the deep-sorting files (Wang, Gao, Tian 2025): ``sorting/*.csv``.

``features.csv`` holds one row per cell: 108 curve features ``feature_i_j_k``
(curve i = 1..4, j = derivative order + 1, statistic k = 1..9), seven explicit
columns and ``bat_num``.  ``capacity_trajectories.csv`` holds one row per cell
and second-life cycle (``bat_num``, ``cycle``, ``capacity`` in Ah).  Both start
with an unnamed pandas index column, which is ignored.

Every schema problem raises :class:`~slbjax.errors.DataError` with a one-line
message naming the file, the line of the file as a person reads it (the header
is line 1) and the field, and saying what was expected.  A cell's life is its
number of trajectory rows (the data README's ``L``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax import provenance
from slbjax.data import plausible
from slbjax.errors import DataError, csv_problem

FEATURES_FILE = "features.csv"
TRAJECTORIES_FILE = "capacity_trajectories.csv"
CURVES = (1, 2, 3, 4)
ORDERS = (1, 2, 3)
STATISTICS = tuple(range(1, 10))
EXPLICIT_COLUMNS = (
    "capacity",
    "voltage",
    "internal_resistance",
    "coulombic_efficiency",
    "energy_efficiency",
    "ica_1",
    "ica_2",
)
CELL_COLUMN = "bat_num"
TRAJECTORY_COLUMNS = (CELL_COLUMN, "cycle", "capacity")


def feature_columns(order: int) -> tuple[str, ...]:
    """The 36 column names ``feature_i_<order>_k`` of one derivative order, curve-major."""
    return tuple(f"feature_{i}_{order}_{k}" for i in CURVES for k in STATISTICS)


INFORMATIVE_EXPLICIT = EXPLICIT_COLUMNS[:-1]  # ica_2 is a constant placeholder (data README)


@dataclasses.dataclass(frozen=True)
class SortingData:
    """Both files, aligned on the cells of ``features.csv`` (ascending cell number).

    Attributes:
      cells: [N] int cell numbers.
      curves: derivative order j (1, 2, 3) -> [N, 36] float DataFrame of the
        ``feature_i_j_k`` columns, indexed by cell number.
      explicit: [N, 7] float DataFrame of :data:`EXPLICIT_COLUMNS`, indexed by cell.
      trajectories: N float arrays [L_n], capacity in Ah per second-life cycle.
      lives: [N] int trajectory lengths L_n (cycles).
    """

    cells: np.ndarray
    curves: dict[int, pd.DataFrame]
    explicit: pd.DataFrame
    trajectories: tuple[np.ndarray, ...]
    lives: np.ndarray


def _error(path: Path, line: int, field: str | None, problem: str) -> DataError:
    return DataError(path, problem, row=line - 2, field=field)


def _read_table(path: Path, what: str) -> pd.DataFrame:
    """All cells as text, blank lines kept so that data row r is file line r + 2."""
    if not path.is_file():
        raise DataError(path, f"file not found, expected {what}")
    provenance.record(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                         skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError(path, f"file is empty, expected a header row and {what}", row=-1) from None
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        row = int(m.group(1)) - 2 if m else None
        raise DataError(path, f"not a valid CSV table ({csv_problem(exc)})", row=row) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(path, f"cannot be read as a text file ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(path, f"header but no data rows, expected {what}", row=0)
    return df


def _require_columns(path: Path, df: pd.DataFrame, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in df.columns:
            raise _error(path, 1, name, f"column missing from the header, expected {name!r}")


def _numbers(path: Path, df: pd.DataFrame, name: str, *, integer: bool = False,
             positive: bool = False) -> np.ndarray:
    """[R] float64 (int64 if ``integer``) of column ``name``; raises at the first bad value."""
    text = df[name].str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        r = int(np.argmax(bad))
        try:
            float(text.iloc[r])
            expected = "a finite number"
        except ValueError:
            expected = "a number"
        raise _error(path, r + 2, name, f"expected {expected}, got {text.iloc[r]!r}")
    if integer:
        frac = values != np.round(values)
        if frac.any():
            r = int(np.argmax(frac))
            raise _error(path, r + 2, name, f"expected an integer, got {text.iloc[r]!r}")
        return values.astype(np.int64)
    if positive and (values <= 0).any():
        r = int(np.argmax(values <= 0))
        raise _error(path, r + 2, name, f"expected a capacity > 0 Ah, got {text.iloc[r]!r}")
    return values


def load_features(path: str | Path) -> tuple[np.ndarray, dict[int, pd.DataFrame], pd.DataFrame]:
    """Reads ``features.csv``.

    Returns:
      (cells [N] int, {j: [N, 36] DataFrame}, explicit [N, 7] DataFrame), rows
      sorted by cell number, frames indexed by it.
    """
    cells, curves, explicit, _ = _features_and_lines(Path(path))
    return cells, curves, explicit


def _features_and_lines(path: Path):
    """:func:`load_features`' result plus {cell: file line of its row}."""
    df = _read_table(path, "one row per cell")
    names = [c for j in ORDERS for c in feature_columns(j)]
    _require_columns(path, df, (*names, *EXPLICIT_COLUMNS, CELL_COLUMN))
    cells = _numbers(path, df, CELL_COLUMN, integer=True)
    seen: dict[int, int] = {}
    for r, cell in enumerate(cells.tolist()):
        if cell in seen:
            raise _error(path, r + 2, CELL_COLUMN,
                         f"cell {cell} already on line {seen[cell]}, expected one row per cell")
        seen[cell] = r + 2
    table = pd.DataFrame({c: _numbers(path, df, c) for c in (*names, *EXPLICIT_COLUMNS)},
                         index=pd.Index(cells, name=CELL_COLUMN)).sort_index()
    curves = {j: table.loc[:, list(feature_columns(j))] for j in ORDERS}
    return table.index.to_numpy(), curves, table.loc[:, list(EXPLICIT_COLUMNS)], seen


def load_trajectories(path: str | Path) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Reads ``capacity_trajectories.csv``.

    Returns:
      ({cell: [L] float capacity in Ah}, {cell: file line of its first row}).
    """
    path = Path(path)
    df = _read_table(path, "one row per cell and cycle")
    _require_columns(path, df, TRAJECTORY_COLUMNS)
    cells = _numbers(path, df, CELL_COLUMN, integer=True)
    cycles = _numbers(path, df, "cycle")
    capacity = _numbers(path, df, "capacity", positive=True)
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    ends = np.r_[starts[1:], len(cells)]
    out: dict[int, np.ndarray] = {}
    first_line: dict[int, int] = {}
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cell = int(cells[s])
        if cell in out:
            raise _error(path, s + 2, CELL_COLUMN,
                         f"rows of cell {cell} resume after other cells (it started on line "
                         f"{first_line[cell]}), expected each cell's rows together")
        step = np.diff(cycles[s:e])
        if (step <= 0).any():
            r = s + 1 + int(np.argmax(step <= 0))
            raise _error(path, r + 2, "cycle",
                         f"cycle {cycles[r]:g} of cell {cell} follows cycle {cycles[r - 1]:g}, "
                         "expected cycles increasing within a cell")
        plausible.capacity(capacity[s:e], "Ah", lambda problem, row, s=s, cell=cell: _error(
            path, s + (row or 0) + 2, "capacity", f"cell {cell}: {problem}"))
        out[cell] = capacity[s:e].copy()
        first_line[cell] = s + 2
    return out, first_line


def load_sorting(folder: str | Path) -> SortingData:
    """Reads ``features.csv`` and ``capacity_trajectories.csv`` of ``folder``.

    Raises:
      DataError: a missing file or column, a bad value, unordered cycles, or a
        cell present in one file and not in the other.
    """
    folder = Path(folder)
    feat_path, traj_path = folder / FEATURES_FILE, folder / TRAJECTORIES_FILE
    cells, curves, explicit, feature_line = _features_and_lines(feat_path)
    trajectories, first_line = load_trajectories(traj_path)
    for cell, line in first_line.items():
        if cell not in feature_line:
            raise _error(traj_path, line, CELL_COLUMN,
                         f"cell {cell} has no row in {FEATURES_FILE}, expected the same cells")
    for cell, line in feature_line.items():
        if cell not in trajectories:
            raise _error(feat_path, line, CELL_COLUMN,
                         f"cell {cell} has no row in {TRAJECTORIES_FILE}, expected the same cells")
    trajs = tuple(trajectories[c] for c in cells.tolist())
    return SortingData(
        cells=cells,
        curves=curves,
        explicit=explicit,
        trajectories=trajs,
        lives=np.array([len(t) for t in trajs], dtype=np.int64),
    )


def model_features(data: SortingData) -> np.ndarray:
    """[N, 114] what a regressor reads of the feature cycle: the 108 curve features
    (derivative orders 1, 2, 3) and the six informative explicit columns."""
    return np.hstack([*(data.curves[j].to_numpy() for j in ORDERS),
                      data.explicit.loc[:, list(INFORMATIVE_EXPLICIT)].to_numpy()]).astype(np.float64)
