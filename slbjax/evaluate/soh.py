"""SOH estimation from pulse features: the random forest of the generative SOH study and its error."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from slbjax.configs.cvae import CvaeDownstream
from slbjax.evaluate import metrics


def fit_forest(x: np.ndarray, y: np.ndarray, cfg: CvaeDownstream) -> RandomForestRegressor:
    """A random forest (scikit-learn) fitted on features ``x`` [n, F] to SOH ``y`` [n].

    One job, seeded by ``cfg.seed``, so the same rows give the same forest.
    """
    return RandomForestRegressor(
        n_estimators=cfg.n_estimators,
        max_depth=cfg.max_depth,
        min_samples_leaf=cfg.min_samples_leaf,
        bootstrap=cfg.bootstrap,
        random_state=cfg.seed,
        n_jobs=1,
    ).fit(x, y)


def soh_errors(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(MAPE, std of the absolute percentage errors), both in %, of SOH ``pred`` vs ``true`` [n]."""
    return metrics.mape_pct(pred, true), float(np.std(metrics.ape_pct(pred, true)))
