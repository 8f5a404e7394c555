"""Prediction intervals of ensembles: the nominal multiplier and its conformal calibration."""

from __future__ import annotations

import dataclasses

import numpy as np

from slbjax.data.windows import Windows
from slbjax.evaluate.conformal import (
    cell_conformal_scale,
    conformal_scale,
    ensemble_spread,
    min_calibration_size,
)

Z90 = 1.6448536269514722  # standard-normal quantile of 0.95


INTERVAL_LEVEL = 0.9
"""Nominal coverage of the reported interval (the ``90`` in the metric names)."""


@dataclasses.dataclass(frozen=True)
class IntervalCalibration:
    """How an ensemble's interval ``mean +- scale * std`` was set.

    Attributes:
      scale: the multiplier used everywhere (metrics, predictions.csv,
        checkpoint, ``slbjax predict``).
      calibrated: whether ``scale`` is the split-conformal one.
      pooled: split-conformal ``q`` from the pooled validation points (the one
        used; NaN when not computed).
      cell: cell-level ``q`` (within-cell 90 % quantile, finite-sample rank
        over validation cells), reported only; ``inf`` with fewer than
        :func:`~slbjax.evaluate.conformal.min_calibration_size` cells.
      cells, points: validation cells and (window, step) points used.
      note: why the interval is uncalibrated, when it is.
    """

    scale: float
    calibrated: bool
    pooled: float = float("nan")
    cell: float = float("nan")
    cells: int = 0
    points: int = 0
    note: str | None = None

    def meta(self) -> dict:
        """The checkpoint entry that :class:`slbjax.inference.Run` reads."""
        return {
            "scale": float(self.scale),
            "calibrated": self.calibrated,
            "level": INTERVAL_LEVEL,
            "method": ("split conformal, pooled validation points" if self.calibrated
                       else "nominal normal quantile (uncalibrated)"),
            "validation_cells": self.cells,
            "validation_points": self.points,
        }


def calibrate_interval(member_pred: np.ndarray | None, w: Windows | None) -> IntervalCalibration:
    """Split-conformal multiplier of the 90 % interval from the validation windows.

    ``member_pred`` [N, M, L] are the members' predictions of the validation
    windows ``w`` (None: no validation windows).  The scores are
    ``|target - mean| / std`` over every (window, step) point of the
    validation cells; ``q`` is their ``ceil((n + 1) * 0.9)``-th smallest
    (:func:`~slbjax.evaluate.conformal.conformal_scale`).  Pooling points
    treats them as exchangeable with a test cell's points, which the
    overlapping windows of a few cells are not (docs/intervals.md); the
    cell-level ``q`` is computed beside it for comparison.  Falls back to the
    nominal 1.645 (with a note) without validation windows or with too few
    points for a finite ``q``.
    """
    if member_pred is None or w is None or len(w) == 0:
        return IntervalCalibration(
            Z90, False, note="no validation windows: the ensemble's 90 % interval is the nominal, "
            "uncalibrated mean +- 1.645 x member std (no conformal calibration possible)")
    mean, std = ensemble_spread(member_pred.astype(np.float64))
    true = np.asarray(w.target, np.float64)
    cells = np.broadcast_to(w.cell_index[:, None], true.shape)
    ok = np.isfinite(true)
    args = (mean[ok], std[ok], true[ok])
    pooled = conformal_scale(*args, INTERVAL_LEVEL)
    cell = cell_conformal_scale(*args, cells[ok], INTERVAL_LEVEL, within="quantile")
    n_cells, n_points = len(np.unique(cells[ok])), int(ok.sum())
    if not np.isfinite(pooled):
        return IntervalCalibration(
            Z90, False, pooled, cell, n_cells, n_points,
            note=f"{n_points} validation points are too few for a finite 90 % conformal quantile "
            f"(at least {min_calibration_size(INTERVAL_LEVEL)}): the interval is the nominal, uncalibrated one")
    return IntervalCalibration(pooled, True, pooled, cell, n_cells, n_points)
