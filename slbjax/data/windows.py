"""Prediction samples ("windows") cut from cells, as the reference loader builds them.

A window starting at row ``s`` of a cell holds the inputs known at cycle ``s``
(the processed Q-V curve and the physics features of that row) and, for the
``L = horizon`` rows ``s .. s+L-1``, the planned load (charge current,
discharge current, temperature) and the target capacity.  The window starts at
the current cycle, so ``target[:, 0]`` is the capacity of the start row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from slbjax.data.cells import QV_POINTS, Cell
from slbjax.data.features import physics_features, trim_soc

__all__ = ["Windows", "build_windows", "window_starts"]


@dataclasses.dataclass(frozen=True, eq=False)
class Windows:
    """M samples of horizon L with F features.

    Attributes:
      qv: [M, 50] float32 processed Q-V curve (Ah) of the start row (after trim_soc).
      features: [M, F] float32 raw (un-normalised) physics features of the start row.
      load: [M, L, 3] float32 charge current, discharge current, temperature of
        rows start .. start+L-1.
      target: [M, L] float32 capacity (Ah) of the same rows.
      cell_index: [M] int32 index into ``cell_names``.
      start_row: [M] int32 0-based row of the start within its cell.
      start_cycle: [M] int32 published cycle number of the start row.
      cell_names: names of the cells, in the order given.
      report: per cell name: ``rows``, ``starts`` (candidate starts, the
        reference loader's window count), ``skipped_invalid`` (candidates
        dropped because the row is not ``valid``), ``windows`` (kept) and
        ``too_short`` (True when the cell has fewer than horizon+1 rows and so
        gives no window).
    """

    qv: np.ndarray
    features: np.ndarray
    load: np.ndarray
    target: np.ndarray
    cell_index: np.ndarray
    start_row: np.ndarray
    start_cycle: np.ndarray
    cell_names: list[str]
    report: dict[str, dict]

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.target.shape[1])

    @property
    def too_short(self) -> list[str]:
        """Names of the cells that gave no window because they are too short."""
        return [name for name, r in self.report.items() if r["too_short"]]


def window_starts(num_rows: int, horizon: int, skip_first: int = 0) -> np.ndarray:
    """Candidate start rows of one cell, as in the reference loader.

    The reference iterates over ``N - L`` start positions beginning at
    ``skip_first`` (UL/TPSL: rows 0..N-L-1; LSD, which skips row 0: rows
    1..N-L).  Starts whose window would run past the last row are dropped, so
    ``skip_first > 1`` gives fewer than ``N - L``.

    Returns:
      [S] int64 start rows (empty when ``num_rows <= horizon``).
    """
    count = max(num_rows - horizon, 0)
    starts = np.arange(skip_first, skip_first + count, dtype=np.int64)
    return starts[starts + horizon <= num_rows]


def _cell_windows(
    cell: Cell,
    horizon: int,
    soc_start: int,
    max_windows: int | None,
    skip_first: int,
) -> tuple[dict[str, np.ndarray], dict]:
    """Windows of one cell and its report entry."""
    n = cell.num_cycles
    candidates = window_starts(n, horizon, skip_first)
    keep = candidates[cell.valid[candidates]]
    if max_windows is not None:
        keep = keep[:max_windows]
    report = {
        "rows": n,
        "starts": int(candidates.size),
        "skipped_invalid": int(candidates.size - np.count_nonzero(cell.valid[candidates])),
        "windows": int(keep.size),
        "too_short": n < horizon + 1,
    }
    qv = trim_soc(cell.qv[keep], soc_start)
    relax = None if cell.relaxation is None else [cell.relaxation[i] for i in keep]
    rows = keep[:, None] + np.arange(horizon)[None, :]  # [S, L]
    arrays = {
        "qv": qv,
        "features": physics_features(qv, cell.voltage_grid, relax),
        "load": cell.load[rows],
        "target": cell.capacity_ah[rows],
        "start_row": keep,
        "start_cycle": cell.cycle[keep],
    }
    return arrays, report


def build_windows(
    cells: list[Cell],
    horizon: int,
    soc_start: int,
    max_windows_per_cell: int | None = None,
    skip_first: int = 0,
) -> Windows:
    """Cuts every cell into prediction windows.

    Starts are the reference loader's (:func:`window_starts`) minus rows whose
    ``valid`` flag is False, then capped at ``max_windows_per_cell`` (the
    reference uses the first 19 for TPSL).  Features are computed on the
    processed (trimmed) Q-V curve, as the reference does.  Cells with fewer
    than ``horizon + 1`` rows give no window and are flagged ``too_short`` in
    the report.

    Args:
      cells: cells to cut; all with relaxation data or all without.
      horizon: window length L (cycles), >= 1.
      soc_start: random initial SOC (20, 30, 40 or 50), see ``trim_soc``.
      max_windows_per_cell: keep at most this many windows per cell (first ones).
      skip_first: leading rows skipped (1 for LSD, as the authors do).

    Returns:
      :class:`Windows` with M = total windows.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if skip_first < 0:
        raise ValueError(f"skip_first must be >= 0, got {skip_first}")
    if max_windows_per_cell is not None and max_windows_per_cell < 0:
        raise ValueError(f"max_windows_per_cell must be >= 0, got {max_windows_per_cell}")
    has_relax = {c.relaxation is not None for c in cells}
    if len(has_relax) > 1:
        raise ValueError("cannot mix cells with and without relaxation data (12 vs 6 features)")
    n_feat = 12 if has_relax != {False} else 6
    parts, report, names = [], {}, []
    for i, cell in enumerate(cells):
        arrays, rep = _cell_windows(cell, horizon, soc_start, max_windows_per_cell, skip_first)
        arrays["cell_index"] = np.full(rep["windows"], i)
        parts.append(arrays)
        key = cell.name if cell.name not in report else f"{cell.name}@{i}"
        report[key] = rep
        names.append(cell.name)
    return Windows(
        qv=_stack(parts, "qv", (QV_POINTS,), np.float32),
        features=_stack(parts, "features", (n_feat,), np.float32),
        load=_stack(parts, "load", (horizon, 3), np.float32),
        target=_stack(parts, "target", (horizon,), np.float32),
        cell_index=_stack(parts, "cell_index", (), np.int32),
        start_row=_stack(parts, "start_row", (), np.int32),
        start_cycle=_stack(parts, "start_cycle", (), np.int32),
        cell_names=names,
        report=report,
    )


def _stack(parts: list[dict], key: str, tail: tuple[int, ...], dtype) -> np.ndarray:
    if not parts:
        return np.zeros((0, *tail), dtype=dtype)
    return np.concatenate([p[key].reshape(-1, *tail) for p in parts]).astype(dtype)


class Batch(NamedTuple):
    """Model inputs and targets, leading axis = windows."""

    qv: Any  # [M, Q]
    features: Any  # [M, F]
    load: Any  # [M, L, 3]
    target: Any  # [M, L]

    @property
    def size(self) -> int:
        return int(self.qv.shape[0])

    def take(self, idx) -> Batch:
        return Batch(*(x[idx] for x in self))
