"""Scoring life predictions: cross-fold conformal intervals, baselines, metrics.

Predictions are made in log remaining life: a centre ``mu`` and a spread
``sd`` per cell.  Every cell belongs to one cross-validation fold and was
predicted by models that never saw it.  Its interval is ``exp(mu +- q sd)``
with ``q`` the split-conformal multiplier (:mod:`slbjax.evaluate.conformal`)
computed from the held-out scores of the cells of the OTHER folds, so no
cell's interval is calibrated on that cell.  The saved model's multiplier uses
the held-out scores of all cells.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm, spearmanr
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slbjax.evaluate import metrics
from slbjax.evaluate.conformal import conformal_quantile, normalised_scores
from slbjax.evaluate.intervals import Z90

RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def cross_fold_scale(mu: np.ndarray, sd: np.ndarray, truth: np.ndarray, fold: np.ndarray,
                     level: float) -> np.ndarray:
    """[N] multiplier per cell from the held-out scores of the other folds' cells.

    ``mu``, ``sd``, ``truth`` may carry trailing axes (e.g. levels of a
    trajectory): every entry of a cell is a score.
    """
    scores = normalised_scores(mu, sd, truth).reshape(len(fold), -1)
    q = np.empty(len(fold))
    for f in np.unique(fold):
        q[fold == f] = conformal_quantile(scores[fold != f], level)
    return q


def calibrated_sd(mu: np.ndarray, sd: np.ndarray, truth: np.ndarray, fold: np.ndarray,
                  level: float) -> np.ndarray:
    """[N] spread of a normal whose central ``level`` interval is the cross-fold conformal
    one, ``mu +- q sd``: ``q sd / z`` with z the normal quantile of that level."""
    return sd * cross_fold_scale(mu, sd, truth, fold, level) / norm.ppf(0.5 + level / 2)


def interval(mu: np.ndarray, sd: np.ndarray, q) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(mu - q sd), exp(mu + q sd))`` with q broadcast over trailing axes."""
    q = np.asarray(q, np.float64).reshape(np.shape(q) + (1,) * (np.ndim(mu) - np.ndim(q)))
    return np.exp(mu - q * sd), np.exp(mu + q * sd)


def life_scores(pred: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                truth: np.ndarray) -> dict[str, float]:
    """MAPE (%), Spearman rho, coverage and mean interval width (cycles) of life predictions."""
    return {
        "mape_pct": metrics.mape_pct(pred, truth),
        "spearman": float(spearmanr(pred, truth).statistic),
        "picp90": metrics.coverage(lower, upper, truth),
        "interval_width90_cycles": float(np.mean(upper - lower)),
    }


def uncalibrated_interval(mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normal-approximation interval ``exp(mu +- 1.645 sd)``."""
    return interval(mu, sd, Z90)


def fit_baseline(kind: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int,
                 trees: int):
    """A scikit-learn baseline on log remaining life: ``"ridge"`` (standardised features,
    alpha chosen by 5-fold cross-validation over cells of the training rows) or
    ``"forest"`` (a random forest of ``trees`` trees, leaves of at least 5 rows)."""
    if kind == "ridge":
        splits = list(GroupKFold(n_splits=min(5, len(np.unique(groups)))).split(x, y, groups))
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, cv=splits))
    elif kind == "forest":
        model = RandomForestRegressor(n_estimators=trees, min_samples_leaf=5, random_state=seed,
                                      n_jobs=-1)
    else:
        raise ValueError(f"unknown baseline {kind!r}")
    return model.fit(x, y)


def baseline_spread(kind: str, model, x_train: np.ndarray, y_train: np.ndarray,
                    x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sd) in log life: the forest's spread over its trees; for ridge a constant
    spread, the training residuals' standard deviation (the conformal step rescales it)."""
    mu = model.predict(x)
    if kind == "forest":
        sd = np.stack([t.predict(x) for t in model.estimators_]).std(0)
    else:
        sd = np.full(len(x), float(np.std(y_train - model.predict(x_train))))
    return mu, sd


def gp_out_of_fold(x: np.ndarray, y: np.ndarray, fold: np.ndarray, components: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """([N] mu, [N] sd) of ``y`` for every cell from a Gaussian process fit on the other folds.

    Per fold: the features standardised, their first ``components`` principal components
    (both fit on the training cells), a GP with a constant x RBF kernel plus white noise on
    the standardised target, hyperparameters by the marginal likelihood (3 starts, seeded).
    ``sd`` is the posterior predictive spread, noise included.  On the 86 LSD cells the
    noise level settles on its lower bound in about half of the folds (the process
    interpolates the training cells); scikit-learn's note of that is not shown, the
    conformal step sizes the spread on held-out cells.
    """
    mu, sd = np.empty(len(y)), np.empty(len(y))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        kernel = ConstantKernel() * RBF(3.0) + WhiteKernel(0.05)
        model = make_pipeline(StandardScaler(), PCA(min(components, int(train.sum()) - 1)),
                              GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2,
                                                       random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[train], y[train])
        mu[test], sd[test] = model.predict(x[test], return_std=True)
    return mu, sd
