"""Accuracy metrics over all predicted points, as the papers report them.

Every function takes ``(pred, true)`` in that order; points whose truth is
unknown (NaN) do not count.
"""

from __future__ import annotations

import numpy as np


def ape_pct(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Absolute percentage error (%) per point: |pred - true| / |true| x 100.

    NaN where the truth is unknown (not finite) or zero.
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ok = np.isfinite(true) & (np.abs(true) > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, np.abs(pred - true) / np.abs(np.where(ok, true, 1.0)) * 100.0, np.nan)


def mape_pct(pred: np.ndarray, true: np.ndarray, axis: int | None = None):
    """Mean absolute percentage error (%) over the points where truth is known.

    A float over all points (``axis=None``), else an array of means along ``axis``.
    """
    ape = ape_pct(pred, true)
    if axis is not None:
        return np.nanmean(ape, axis=axis)
    ok = np.isfinite(ape)
    return float(ape[ok].mean()) if ok.any() else float("nan")


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ok = np.isfinite(true)
    return float(np.mean(np.abs(pred[ok] - true[ok]))) if ok.any() else float("nan")


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ok = np.isfinite(true)
    return float(np.sqrt(np.mean((pred[ok] - true[ok]) ** 2))) if ok.any() else float("nan")


def r2(pred: np.ndarray, true: np.ndarray) -> float:
    """Coefficient of determination over all points (1 - SS_res / SS_tot)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ok = np.isfinite(true)
    if ok.sum() < 2:
        return float("nan")
    ss_res = np.sum((pred[ok] - true[ok]) ** 2)
    ss_tot = np.sum((true[ok] - true[ok].mean()) ** 2)
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def trajectory_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAPE (%), RMSE (Ah) and R^2 over every point of [M, L] trajectories."""
    return {"mape_pct": mape_pct(pred, true), "rmse_ah": rmse(pred, true), "r2": r2(pred, true)}


def coverage(lower: np.ndarray, upper: np.ndarray, true: np.ndarray) -> float:
    """Prediction-interval coverage probability: share of known truths inside [lower, upper]."""
    true = np.asarray(true, np.float64)
    ok = np.isfinite(true)
    inside = (true >= lower) & (true <= upper)
    return float(inside[ok].mean()) if ok.any() else float("nan")
