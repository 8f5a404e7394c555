"""Prediction intervals from ensemble members."""

from __future__ import annotations

import numpy as np

Z90 = 1.6448536269514722  # standard-normal quantile of 0.95


def ensemble_summary(member_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and nominal-90 % interval over members.

    The interval is mean +- 1.645 x the members' standard deviation (a normal
    approximation: with a handful of members, empirical 5/95 % quantiles would
    be the min and max).  A single member has a zero-width interval.

    Args:
      member_pred: [N, M, L] predictions of N members.

    Returns:
      ``mean``, ``lower``, ``upper``: [M, L].
    """
    mean = member_pred.mean(0)
    std = member_pred.std(0, ddof=1) if member_pred.shape[0] > 1 else np.zeros_like(mean)
    return {"mean": mean, "lower": mean - Z90 * std, "upper": mean + Z90 * std}
