"""The in-memory form of one cycled cell, shared by every iMOE data source.

A published file (UL, LSD, TPSL) or a synthetic generator becomes a
:class:`Cell`: per-cycle arrays with one row per recorded cycle, capacities in
Ah, and the partial-charge Q-V curve on a known voltage grid.  Everything
downstream (features, windows, predictions) works on ``Cell`` only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

QV_POINTS = 50  # points of every Q-V curve, as published


@dataclasses.dataclass(frozen=True, eq=False)
class Cell:
    """One cell's cycling record, N cycles long.

    Attributes:
      name: identifier used in outputs, e.g. ``"CY25-05_1-#1"``, ``"LSD-1"``.
      source: file it was read from (or ``"synthetic"``).
      dataset: ``"UL"``, ``"LSD"``, ``"TPSL"`` or ``"synthetic"``.
      cycle: [N] int cycle numbers as published (may have gaps or restart).
      qv: [N, 50] float64 charge capacity (Ah) gained during the CC charge at the
        50 voltages of ``voltage_grid``, re-based so ``qv[:, 0] == 0``.
      voltage_grid: [50] float64 voltages (V) of the Q-V columns.
      relaxation: tuple of N float64 arrays (V), the rest after charging; ``None``
        for datasets without relaxation data (TPSL).
      charge_current: [N] float64 charge current (C-rate for UL/LSD/synthetic, A for TPSL).
      discharge_current: [N] float64 discharge current, positive (same units convention).
      temperature: [N] float64 ambient temperature (degC).
      capacity_ah: [N] float64 discharge capacity (Ah), the prediction target.
      valid: [N] bool, False for cycles whose inputs are unusable as a
        prediction start (outlier Q-V curve, broken relaxation record); their
        capacity and load still count inside trajectories.
      notes: human-readable notes on what was corrected while loading.
      warnings: values that are legal but unusual (a condition the file name
        contradicts, a temperature outside 0..60 degC, ...); runs copy them
        into ``data_report.json``.
    """

    name: str
    source: str
    dataset: str
    cycle: np.ndarray
    qv: np.ndarray
    voltage_grid: np.ndarray
    relaxation: tuple[np.ndarray, ...] | None
    charge_current: np.ndarray
    discharge_current: np.ndarray
    temperature: np.ndarray
    capacity_ah: np.ndarray
    valid: np.ndarray
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def num_cycles(self) -> int:
        return int(self.capacity_ah.shape[0])

    @property
    def load(self) -> np.ndarray:
        """[N, 3] float64: charge current, discharge current, temperature per cycle."""
        return np.stack([self.charge_current, self.discharge_current, self.temperature], axis=1)
