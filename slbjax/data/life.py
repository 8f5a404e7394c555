"""What a tester measures when a retired cell arrives, and the life that follows.

A cell "arrives" at a row ``start`` of its record and is measured for
``measured`` cycles (rows ``start .. start + measured - 1``; a triage file is
just those rows, with ``start = 0``).  From them come the arrival features
(:data:`FEATURE_NAMES`); the prediction starts after the last measured row
``last``:

* **remaining life** ``R``: cycles from ``last`` until the capacity first
  falls to ``end_ah`` (the record's last row if it never does: the LSD tests
  stop there);
* **shape**: the first-passage times ``t_1 <= ... <= t_K = R`` (cycles after
  ``last``) of ``K`` capacities evenly spaced between the last measured
  capacity and ``end_ah``.  The trajectory is these points joined by straight
  lines (:func:`trajectory_from_times`), so life and trajectory are one
  prediction.

Training uses many arrivals per cell (every ``stride`` rows while at least
``min_remaining`` cycles are left); evaluation uses arrival at the record's
start, or at a given row (the deep-sorting feature cycle).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from slbjax.data.cells import Cell
from slbjax.data.features import relaxation_features
from slbjax.errors import DataError

QV_POINTS_USED = tuple(range(4, 50, 5))  # 10 of the 50 Q-V voltages: 3.82 .. 4.10 V on LSD
FEATURE_NAMES = (
    "capacity_ah", "capacity_mean_ah", "capacity_slope_ah_per_cycle",
    *(f"qv_{i}" for i in QV_POINTS_USED),
    *(f"dqv_{i}" for i in QV_POINTS_USED),
    "relax_mean", "relax_skew", "relax_max", "relax_min", "relax_var", "relax_kurt",
)
# the SOH estimator's inputs: ONE cycle's Q-V curve and relaxation voltage, no capacity
SOH_FEATURE_NAMES = (
    *(f"qv_{i}" for i in QV_POINTS_USED),
    "relax_mean", "relax_skew", "relax_max", "relax_min", "relax_var", "relax_kurt",
)


@dataclasses.dataclass(frozen=True)
class Arrivals:
    """Samples: one row per (cell, arrival).

    Attributes:
      x: [S, F] arrival features (:data:`FEATURE_NAMES`).
      remaining: [S] int remaining life R (cycles after the last measured one).
      times: [S, K] int first-passage times of the K levels (``times[:, -1] == remaining``).
      last_capacity: [S] capacity (Ah) of the last measured cycle.
      cell: [S] int index into ``names``.
      start: [S] int arrival row.
      names: cell names.
    """

    x: np.ndarray
    remaining: np.ndarray
    times: np.ndarray
    last_capacity: np.ndarray
    cell: np.ndarray
    start: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def levels(last_capacity: np.ndarray, end_ah: float, num_levels: int) -> np.ndarray:
    """[S, K] capacities ``c - j / K * (c - end_ah)``, j = 1 .. K."""
    j = np.arange(1, num_levels + 1) / num_levels
    c = np.asarray(last_capacity, np.float64)[:, None]
    out = c - j[None, :] * (c - end_ah)
    out[:, -1] = end_ah  # exactly, so that "at or below the end" holds on it
    return out


def check_measurable(cell: Cell, start: int, measured: int) -> None:
    """Raises DataError when rows ``start .. start + measured - 1`` cannot be used."""
    if cell.relaxation is None:
        raise DataError(cell.source, f"{cell.dataset} files hold no relaxation voltage; the life "
                        "model needs the Q-V curve and the relaxation record (LSD or UL files)",
                        field="Relaxation_Voltage")
    if start + measured > cell.num_cycles:
        left = max(cell.num_cycles - start, 0)
        raise DataError(cell.source, f"holds {left} cycle(s) from its arrival on; the life model "
                        f"needs {measured} measured cycles (data.measured_cycles)",
                        row=min(start, cell.num_cycles - 1),
                        cycle=int(cell.cycle[min(start, cell.num_cycles - 1)]))
    rows = np.arange(start, start + measured)
    if not cell.valid[rows].all():
        bad = int(rows[~cell.valid[rows]][0])
        raise DataError(cell.source, "unusable Q-V curve or relaxation record in a measured cycle",
                        row=bad, cycle=int(cell.cycle[bad]))


def arrival_features(cell: Cell, start: int, measured: int) -> np.ndarray:
    """[F] features of the ``measured`` cycles from row ``start`` (see :data:`FEATURE_NAMES`)."""
    check_measurable(cell, start, measured)
    rows = slice(start, start + measured)
    cap = cell.capacity_ah[rows]
    slope = np.polyfit(np.arange(measured, dtype=np.float64), cap, 1)[0] if measured > 1 else 0.0
    qv = cell.qv[rows][:, QV_POINTS_USED]
    relax = relaxation_features([cell.relaxation[start + measured - 1]])[0]
    return np.concatenate([[cap[-1], cap.mean(), slope], qv.mean(0), qv[-1] - qv[0], relax])


def soh_features(cell: Cell, rows: Sequence[int]) -> np.ndarray:
    """[len(rows), 16] single-cycle SOH inputs (:data:`SOH_FEATURE_NAMES`) of the given rows:
    the charge capacity gained at 10 voltages of the Q-V curve and the relaxation statistics.
    The capacity column is not an input (it is the answer)."""
    rows = np.asarray(rows, np.int64)
    if cell.relaxation is None:
        check_measurable(cell, 0, 1)  # raises the life model's error for files without it
    relax = relaxation_features([cell.relaxation[r] for r in rows])
    return np.concatenate([cell.qv[rows][:, QV_POINTS_USED], relax], axis=1)


def first_passage(capacity: np.ndarray, last: int, targets: np.ndarray) -> np.ndarray:
    """Cycles after row ``last`` until the capacity first falls to each target (ascending
    times for descending targets); the record's last row when it never does."""
    future = capacity[last + 1:]
    out = np.empty(len(targets), np.int64)
    for j, target in enumerate(targets):
        hit = np.flatnonzero(future <= target)
        out[j] = (hit[0] if hit.size else len(future) - 1) + 1
    return np.maximum.accumulate(np.maximum(out, 1))


def cell_targets(cell: Cell, start: int, measured: int, end_ah: float,
                 num_levels: int) -> tuple[int, np.ndarray, float]:
    """(remaining life, [K] first-passage times, last measured capacity) for one arrival."""
    last = start + measured - 1
    c_last = float(cell.capacity_ah[last])
    times = first_passage(cell.capacity_ah, last, levels(np.array([c_last]), end_ah, num_levels)[0])
    remaining = int(times[-1])
    return remaining, np.minimum(times, remaining), c_last


def build_arrivals(cells: Sequence[Cell], starts: Sequence[Sequence[int]], measured: int,
                   end_ah: float, num_levels: int) -> Arrivals:
    """Samples at the given arrival rows of each cell (``starts[i]`` for ``cells[i]``)."""
    xs, rem, times, caps, index, start_rows = [], [], [], [], [], []
    for i, (cell, rows) in enumerate(zip(cells, starts, strict=True)):
        for s in rows:
            r, t, c = cell_targets(cell, s, measured, end_ah, num_levels)
            xs.append(arrival_features(cell, s, measured))
            rem.append(r)
            times.append(t)
            caps.append(c)
            index.append(i)
            start_rows.append(s)
    f = len(FEATURE_NAMES)
    return Arrivals(
        x=np.asarray(xs, np.float64).reshape(-1, f), remaining=np.asarray(rem, np.int64),
        times=np.asarray(times, np.int64).reshape(-1, num_levels),
        last_capacity=np.asarray(caps, np.float64), cell=np.asarray(index, np.int64),
        start=np.asarray(start_rows, np.int64), names=tuple(c.name for c in cells))


def training_starts(cell: Cell, measured: int, end_ah: float, stride: int,
                    min_remaining: int) -> list[int]:
    """Arrival rows 0, stride, 2 stride, ... whose measured cycles are usable, whose last
    measured capacity is above ``end_ah`` and that leave at least ``min_remaining`` cycles."""
    out = []
    for s in range(0, cell.num_cycles - measured, stride):
        rows = np.arange(s, s + measured)
        last = rows[-1]
        if not cell.valid[rows].all() or cell.capacity_ah[last] <= end_ah:
            continue
        if cell_targets(cell, s, measured, end_ah, 2)[0] >= min_remaining:
            out.append(s)
    return out


def trajectory_from_times(last_capacity: float, level_capacity: np.ndarray, times: np.ndarray,
                          steps: int) -> np.ndarray:
    """[steps] capacity at cycles 1 .. steps after the last measured one: straight lines
    through (0, last capacity) and (times_j, level_j), constant at the last level after."""
    t = np.concatenate([[0.0], np.maximum.accumulate(np.asarray(times, np.float64))])
    q = np.concatenate([[last_capacity], level_capacity])
    return np.interp(np.arange(1, steps + 1, dtype=np.float64), t, q)
