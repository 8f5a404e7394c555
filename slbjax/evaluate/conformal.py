"""Split-conformal scaling of ensemble intervals.

An ensemble gives a centre ``mean`` and a spread ``std`` per prediction; the
nominal interval ``mean +- z * std`` with a normal ``z`` assumes the members'
spread is the error's spread, which a few members trained on the same cells
rarely honour.  The conformal step measures, on held-out points the models
never trained on, the normalised error ``|true - mean| / std`` and takes as the
multiplier its ``ceil((n + 1) * level)``-th smallest value (the finite-sample
split-conformal quantile).  If calibration and new points are exchangeable,
``mean +- q * std`` then covers a new point with probability at least
``level`` (Vovk et al. 2005; Lei et al. 2018, "Distribution-free predictive
inference for regression", JASA 113, normalised scores as in their
locally weighted variant).

Points are not cells.  The windows of one cell overlap and share the cell's
bias, so the scores of a calibration set are exchangeable with a new cell's
only at the level of whole cells.  :func:`cell_conformal_scale` respects that:
one statistic per cell (the within-cell ``level`` quantile, or the maximum,
of the cell's scores) and the finite-sample rank taken over cells, which
needs at least :func:`min_calibration_size` cells (9 at level 0.9) before it
is finite.  :func:`conformal_scale` pools the points and so assumes
point-level exchangeability; it is finite with far fewer cells but its
``level`` guarantee is then an approximation (see docs/intervals.md).
"""

from __future__ import annotations

import math

import numpy as np

STD_FLOOR_FRACTION = 1e-3
"""A spread below this share of the median spread counts as this share (no division by 0)."""


def normalised_scores(mean: np.ndarray, std: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``|true - mean| / max(std, floor)``, flattened; the floor is
    :data:`STD_FLOOR_FRACTION` of the median spread (1 if every spread is 0)."""
    mean, std, true = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (mean, std, true))
    med = float(np.median(std)) if std.size else 0.0
    floor = STD_FLOOR_FRACTION * med if med > 0 else 1.0
    return np.abs(true - mean) / np.maximum(std, floor)


def conformal_quantile(scores: np.ndarray, level: float = 0.9) -> float:
    """The ``ceil((n + 1) * level)``-th smallest score; ``inf`` when n is too small
    for that rank to exist (fewer than ``level / (1 - level)`` points)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    rank = math.ceil((s.size + 1) * level)
    return float(s[rank - 1]) if rank <= s.size else math.inf


def conformal_scale(mean: np.ndarray, std: np.ndarray, true: np.ndarray, level: float = 0.9) -> float:
    """Multiplier ``q`` for ``mean +- q * std`` from held-out ``(mean, std, true)``."""
    return conformal_quantile(normalised_scores(mean, std, true), level)


def min_calibration_size(level: float = 0.9) -> int:
    """Fewest calibration values for which :func:`conformal_quantile` is finite
    (the smallest n with ``ceil((n + 1) * level) <= n``; 9 at level 0.9)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = 1
    while math.ceil((n + 1) * level) > n:
        n += 1
    return n


def within_cell_statistic(scores: np.ndarray, within: str = "quantile", level: float = 0.9) -> float:
    """One cell's statistic of its scores.

    ``quantile``: the ``ceil(n * level)``-th smallest score, the smallest
    multiplier that covers at least a share ``level`` of the cell's points;
    ``max``: the largest score (the multiplier that covers all of them).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    if s.size == 0:
        raise ValueError("a cell without scores has no statistic")
    if within == "max":
        return float(s[-1])
    if within == "quantile":
        if not 0.0 < level <= 1.0:
            raise ValueError(f"within-cell level must lie in (0, 1], got {level}")
        return float(s[max(math.ceil(s.size * level), 1) - 1])
    raise ValueError(f"within must be 'quantile' or 'max', got {within!r}")


def cell_conformal_scale(
    mean: np.ndarray,
    std: np.ndarray,
    true: np.ndarray,
    groups: np.ndarray,
    level: float = 0.9,
    within: str = "quantile",
    within_level: float | None = None,
) -> float:
    """Cell-level split-conformal multiplier ``q``.

    Scores are :func:`normalised_scores` of all points (one floor for all);
    each cell (``groups``, one label per point) is reduced to
    :func:`within_cell_statistic` and ``q`` is the
    ``ceil((K + 1) * level)``-th smallest of the K cell statistics (``inf``
    when K < :func:`min_calibration_size`).  If the calibration cells and a
    new cell are exchangeable, with probability at least ``level`` the new
    cell's statistic is at most ``q``: ``within="quantile"`` then means at
    least a share ``within_level`` (default ``level``) of the new cell's
    points lie in ``mean +- q * std``, ``within="max"`` that all of them do.
    """
    scores = normalised_scores(mean, std, true)
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != scores.shape:
        raise ValueError(f"groups has {groups.size} labels for {scores.size} points")
    wl = level if within_level is None else within_level
    stats = [within_cell_statistic(scores[groups == g], within, wl) for g in np.unique(groups)]
    return conformal_quantile(np.asarray(stats), level)


def ensemble_spread(member_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members' mean and standard deviation (ddof 1; zeros for one member), [N, ...] -> [...]."""
    mean = member_pred.mean(0)
    std = member_pred.std(0, ddof=1) if member_pred.shape[0] > 1 else np.zeros_like(mean)
    return mean, std


def scaled_interval(mean: np.ndarray, std: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mean - scale * std, mean + scale * std)``; a zero spread gives a zero
    width even for an infinite ``scale``."""
    if not scale >= 0.0:
        raise ValueError(f"interval scale must be >= 0, got {scale}")
    std = np.asarray(std)
    if math.isinf(scale):
        with np.errstate(invalid="ignore"):
            half = np.where(std > 0, scale * std, 0.0)
    else:
        half = scale * std
    return mean - half, mean + half
