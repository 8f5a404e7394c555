"""Physical plausibility of a cell's record: values a schema accepts but a cell cannot have.

A parser checks that a value is a number; these checks ask whether the number
can be what the column says it is.  Each check takes the values in the unit
the file declares and a ``fail(problem, row)`` callback that builds the
error naming the file, line and cycle; values that are possible but unusual
are returned as warnings, which runs copy into ``data_report.json``.

The bounds are wide on purpose: they catch a unit slip (Ah read as mAh is a
factor of 1000), a sign slip, a typing error (1e30) or rows out of order,
never an unusual but real cell.  On the published data (UL-NCA, LSD, TPSL) no
check fires: capacities 0.27..3.4 Ah with rows at most 3.8 times the cell's
median, Q-V window charge 0.41..0.88 of the capacity, 25..45 degC.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from slbjax.errors import DataError

Fail = Callable[[str, int | None], DataError]

CAPACITY_AH_MEDIAN = (0.01, 400.0)  # a single cell's typical discharge capacity, Ah
CAPACITY_SPIKE = 10.0  # a row above this multiple of the cell's median is a slip
CAPACITY_DROP = 20.0  # a row below the median divided by this is a slip
QV_TO_CAPACITY = (0.01, 10.0)  # Q-V window charge / discharge capacity (medians)
TEMPERATURE_C = (-50.0, 150.0)  # outside: not an ambient temperature in degC
TEMPERATURE_C_USUAL = (0.0, 60.0)  # outside: warned, Li-ion cells are rarely cycled there
CELL_VOLTAGE_V = (2.0, 4.5)  # a Li-ion cell's terminal voltage while cycled, V
MAX_C_RATE = 10.0  # above: warned


def capacity(values: np.ndarray, unit: str, fail: Fail) -> None:
    """Discharge capacities: positive, of a cell's scale in ``unit`` ("Ah" or "mAh"), no spike."""
    per_ah = 1000.0 if unit == "mAh" else 1.0
    bad = np.nonzero(values <= 0)[0]
    if bad.size:
        i = int(bad[0])
        raise fail(f"discharge capacity {values[i]:g} {unit}, expected a positive value", i)
    median = float(np.median(values))
    median_ah = median / per_ah
    lo, hi = CAPACITY_AH_MEDIAN
    if median_ah < lo:
        other = f"; the values look like Ah, this file's format holds {unit}" if unit == "mAh" else ""
        raise fail(f"median discharge capacity {median:g} {unit} = {median_ah:.3g} Ah is too small "
                   f"for a cell (expected {lo:g}..{hi:g} Ah){other}", None)
    if median_ah > hi:
        other = f"; the values look like mAh, this file's format holds {unit}" if unit == "Ah" else ""
        raise fail(f"median discharge capacity {median:g} {unit} = {median_ah:.3g} Ah is too large "
                   f"for a cell (expected {lo:g}..{hi:g} Ah){other}", None)
    spikes = np.nonzero((values > CAPACITY_SPIKE * median) | (values < median / CAPACITY_DROP))[0]
    if spikes.size:
        i = int(spikes[0])
        raise fail(f"discharge capacity {values[i]:g} {unit} against the cell's median {median:g} "
                   f"{unit}: outside 1/{CAPACITY_DROP:g}..{CAPACITY_SPIKE:g} times the median, "
                   "a unit or typing slip", i)


def qv_scale(window_charge: np.ndarray, capacity_values: np.ndarray, fail: Fail) -> None:
    """The Q-V curve's charge gain and the discharge capacity are in one unit."""
    ratio = float(np.median(window_charge)) / float(np.median(capacity_values))
    lo, hi = QV_TO_CAPACITY
    if not lo <= ratio <= hi:
        raise fail(f"the Q-V curves gain {ratio:.3g} times the discharge capacity (medians); "
                   f"expected {lo:g}..{hi:g}: the curve and the capacity are in different units",
                   None)


def cycles_increasing(cycle: np.ndarray, fail: Fail, *, restarts: bool = False) -> None:
    """Cycle numbers increase row by row; with ``restarts`` they may also start again
    from the first row's number or below (a record stacked from several files)."""
    back = np.nonzero(np.diff(cycle) <= 0)[0]
    for k in back:
        i = int(k) + 1
        if restarts and cycle[i] < cycle[i - 1] and cycle[i] <= cycle[0]:
            continue
        raise fail(f"cycle {cycle[i]} follows cycle {cycle[i - 1]}; expected increasing cycle "
                   "numbers, rows in the order the cell was cycled", i)


def temperature(values: np.ndarray, fail: Fail) -> list[str]:
    lo, hi = TEMPERATURE_C
    bad = np.nonzero((values < lo) | (values > hi))[0]
    if bad.size:
        i = int(bad[0])
        raise fail(f"temperature {values[i]:g} is outside {lo:g}..{hi:g} degC", i)
    lo, hi = TEMPERATURE_C_USUAL
    odd = (values < lo) | (values > hi)
    if odd.any():
        return [f"temperature {values[odd][0]:g} degC in {int(odd.sum())} row(s): Li-ion cells are "
                f"rarely cycled outside {lo:g}..{hi:g} degC"]
    return []


def c_rate(values: np.ndarray, label: str, fail: Fail) -> list[str]:
    bad = np.nonzero(values < 0)[0]
    if bad.size:
        i = int(bad[0])
        raise fail(f"{label} {values[i]:g} C is negative, expected a C-rate >= 0", i)
    if (values > MAX_C_RATE).any():
        return [f"{label} up to {values.max():g} C: above {MAX_C_RATE:g} C is unusual"]
    return []


def voltage(value: float, label: str, fail: Fail, row: int | None = 0) -> None:
    """One terminal voltage in volts, inside the range a Li-ion cell is cycled in."""
    lo, hi = CELL_VOLTAGE_V
    if not lo <= value <= hi:
        mv = " (it looks like mV)" if value > 1000 * lo else ""
        raise fail(f"{label} {value:g} V is outside {lo:g}..{hi:g} V{mv}; expected volts", row)


def relaxation_unit(flat: np.ndarray, fail: Fail) -> None:
    """Relaxation voltages are in volts: most values inside the cell range, not in mV."""
    median = float(np.median(flat))
    if median > 100.0:  # no cell voltage; single stray rows are marked invalid elsewhere
        raise fail(f"relaxation voltages have a median of {median:g}, expected volts "
                   f"({CELL_VOLTAGE_V[0]:g}..{CELL_VOLTAGE_V[1]:g} V); they look like mV", None)
