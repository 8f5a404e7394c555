"""What the router's weights say: specialisation, regimes, stages, SOH classes.

Every function takes plain arrays (weights on one set of labels, see
:mod:`slbjax.interpret.labels`) so it can be tested on constructed inputs.
SOH is a fraction (capacity / rated capacity); life is the position of a
sample among its cell's prediction starts (0 first, 1 last).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsRegressor, NearestNeighbors
from sklearn.preprocessing import StandardScaler

from slbjax.evaluate import metrics
from slbjax.interpret.labels import chosen

SOH_CLASSES = ("Excellent (SOH >= 90 %)", "Good (80-90 %)", "Degraded (< 80 %)")
SOH_CLASS_EDGES = (0.90, 0.80)
SOH_BANDS = {"95": (0.925, 0.975), "85": (0.825, 0.875), "75": (0.725, 0.775)}
"""The paper's Fig. 4e retirement SOH levels, read as +- 2.5 % bands around them."""


def soh_class(soh: np.ndarray) -> np.ndarray:
    """[M] int: 0 Excellent (>= 90 %), 1 Good (80-90 %), 2 Degraded (< 80 %)."""
    return np.where(soh >= SOH_CLASS_EDGES[0], 0, np.where(soh >= SOH_CLASS_EDGES[1], 1, 2))


def specialisation(weights: np.ndarray, soh: np.ndarray, k: int) -> dict:
    """Usage and SOH profile of each expert of one member.

    Args:
      weights: [M, E]; soh: [M].

    Returns:
      ``usage_share`` [E] (share of the k choices going to each expert, sums to 1),
      ``mean_weight`` [E], ``soh_centre`` / ``soh_p05`` / ``soh_p95`` [E] (SOH of
      the samples choosing the expert; NaN for an unused one), ``routing_entropy``
      (mean per-sample entropy of the weights over log E: 0 one expert, 1 uniform),
      ``effective_experts`` (exp of the entropy of the mean usage: 1 .. E).
    """
    c = chosen(weights, k)
    share = c.sum(0) / c.sum()
    e = weights.shape[1]
    centre, p05, p95 = (np.full(e, np.nan) for _ in range(3))
    for j in range(e):
        s = soh[c[:, j]]
        if s.size:
            centre[j], p05[j], p95[j] = s.mean(), np.quantile(s, 0.05), np.quantile(s, 0.95)
    w = np.clip(weights, 1e-12, 1.0)
    entropy = float(np.mean(-(w * np.log(w)).sum(1)) / np.log(e)) if e > 1 else 0.0
    nz = share[share > 0]
    return {
        "usage_share": share, "mean_weight": weights.mean(0), "soh_centre": centre,
        "soh_p05": p05, "soh_p95": p95, "routing_entropy": entropy,
        "effective_experts": float(np.exp(-(nz * np.log(nz)).sum())),
    }


def stage_link(weights: np.ndarray, soh: np.ndarray) -> tuple[int, float, np.ndarray]:
    """(expert, |Spearman rho|, rho [E]): the expert whose weight tracks SOH most closely."""
    rho = np.array([spearmanr(weights[:, j], soh).statistic if np.ptp(weights[:, j]) > 0 else 0.0
                    for j in range(weights.shape[1])])
    rho = np.nan_to_num(rho)
    j = int(np.argmax(np.abs(rho)))
    return j, float(abs(rho[j])), rho


def regimes(weights: np.ndarray, soh: np.ndarray, n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Routing regimes: k-means of the weights into ``n`` clusters, numbered by decreasing mean SOH.

    Returns:
      (labels [M] int, switch SOH [n-1]): ``switch[r]`` is the SOH threshold that
      best separates regime r (above) from regime r+1 (below): the one that
      misclassifies the fewest of their samples.
    """
    km = KMeans(n_clusters=n, n_init=10, random_state=seed).fit(weights)
    raw = km.labels_
    centre = np.array([soh[raw == r].mean() if np.any(raw == r) else -np.inf for r in range(n)])
    order = np.argsort(-centre)
    labels = np.empty_like(raw)
    for new, old in enumerate(order):
        labels[raw == old] = new
    switch = np.array([best_threshold(soh[labels == r], soh[labels == r + 1]) for r in range(n - 1)])
    return labels, switch


def best_threshold(above: np.ndarray, below: np.ndarray) -> float:
    """Threshold t with the fewest ``above < t`` plus ``below >= t`` (midpoint of the best gap)."""
    if above.size == 0 or below.size == 0:
        return float("nan")
    values = np.unique(np.concatenate([above, below]))
    cands = np.concatenate([[values[0]], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-9]])
    a, b = np.sort(above), np.sort(below)
    errors = np.searchsorted(a, cands, side="left") + (b.size - np.searchsorted(b, cands, side="left"))
    best = np.flatnonzero(errors == errors.min())
    return float(np.median(cands[best]))


def regime_agreement(labels: list[np.ndarray]) -> float:
    """Mean pairwise adjusted Rand index of the regimes of several members on the same samples."""
    pairs = [adjusted_rand_score(labels[i], labels[j])
             for i in range(len(labels)) for j in range(i + 1, len(labels))]
    return float(np.mean(pairs)) if pairs else float("nan")


def early_late_nn_accuracy(points: np.ndarray, life: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy of early (first third of life) vs late (last third).

    Samples in the middle third are left out.  ``groups`` (cell ids), when
    given, keeps a sample's neighbour from being in its own cell.
    """
    stage = np.where(life <= 1 / 3, 0, np.where(life >= 2 / 3, 1, -1))
    keep = stage >= 0
    x, y = points[keep], stage[keep]
    g = groups[keep] if groups is not None else None
    if len(np.unique(y)) < 2 or len(y) < 3:
        return float("nan")
    n = min(len(y), 64)
    nn = NearestNeighbors(n_neighbors=n).fit(x)
    _, idx = nn.kneighbors(x)
    hits = []
    for i, row in enumerate(idx):
        others = row[row != i]
        if g is not None:
            others = others[g[others] != g[i]]
        if others.size:
            hits.append(y[others[0]] == y[i])
    return float(np.mean(hits)) if hits else float("nan")


def tsne(points: np.ndarray, seed: int = 42, max_points: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of standardised ``points`` (perplexity 30, or less for few points).

    Returns (embedding [S, 2], the indices of the S <= max_points samples embedded).
    """
    idx = np.arange(len(points))
    if len(points) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
    x = StandardScaler().fit_transform(points[idx])
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3)))
    emb = TSNE(n_components=2, random_state=seed, perplexity=perplexity, init="pca").fit_transform(x)
    return emb, idx


def classify_soh(train_w: np.ndarray, train_soh: np.ndarray, test_w: np.ndarray, test_soh: np.ndarray) -> dict:
    """SOH class from the weights alone: multinomial logistic regression fit on one set of samples,
    scored on another.

    Returns ``accuracy``, ``recall`` [3] (NaN for a class absent from the test
    samples), ``support`` [3] and ``confusion`` [3, 3] (rows true, columns predicted).
    """
    ytr, yte = soh_class(train_soh), soh_class(test_soh)
    present = np.unique(ytr)
    if present.size == 1:
        pred = np.full(len(yte), present[0])
    else:
        clf = LogisticRegression(max_iter=2000).fit(train_w, ytr)
        pred = clf.predict(test_w)
    conf = np.zeros((3, 3), np.int64)
    np.add.at(conf, (yte, pred), 1)
    return _class_scores(conf)


def _class_scores(conf: np.ndarray) -> dict:
    """Accuracy, per-class recall (NaN for an absent class) and support of a confusion matrix."""
    support = conf.sum(1)
    recall = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.nan)
    return {"accuracy": float(np.trace(conf) / conf.sum()), "recall": recall, "support": support, "confusion": conf}


def classify_soh_loco(w: np.ndarray, soh: np.ndarray, cells: np.ndarray) -> dict:
    """:func:`classify_soh` leave-one-cell-out within one cohort (pooled confusion)."""
    conf = np.zeros((3, 3), np.int64)
    for c in np.unique(cells):
        out = cells == c
        conf += classify_soh(w[~out], soh[~out], w[out], soh[out])["confusion"]
    return _class_scores(conf)


BOOTSTRAP = 1000


def cell_resampled_ratio(num: np.ndarray, den: np.ndarray, seed: int = 0,
                         n: int = BOOTSTRAP) -> tuple[np.ndarray, np.ndarray]:
    """5 % and 95 % quantiles of ``sum(num) / sum(den)`` over resamplings of whole cells.

    Samples of one cell are not independent, so intervals resample cells, with
    replacement, among the cells with ``den > 0`` (none: NaN).

    Args:
      num: [C] or [C, F] per-cell sums; den: [C] per-cell counts.
    """
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    present = np.flatnonzero(den > 0)
    if present.size == 0:
        nan = np.full(num.shape[1:], np.nan)
        return nan, nan
    idx = present[np.random.default_rng(seed).integers(0, present.size, size=(n, present.size))]
    ratio = num[idx].sum(1) / den[idx].sum(1).reshape((n,) + (1,) * (num.ndim - 1))
    return np.quantile(ratio, 0.05, axis=0), np.quantile(ratio, 0.95, axis=0)


def mape_by_soh(pred: np.ndarray, target: np.ndarray, soh: np.ndarray, cell_ids: np.ndarray,
                seed: int = 0) -> dict[str, dict]:
    """MAPE (%) of the samples in each SOH band (:data:`SOH_BANDS`) and class.

    Each entry: ``samples``, ``cells`` (how many cells have samples in it),
    ``mape_pct`` and its 90 % interval ``p05`` / ``p95`` over resampled cells
    (``cell_ids`` [M]: each sample's cell index).
    """
    ape = metrics.ape_pct(pred, target).mean(1)  # [M] per sample
    out = {}
    selections = {f"soh{name}": (soh >= lo) & (soh < hi) for name, (lo, hi) in SOH_BANDS.items()}
    selections.update({f"class{c}": soh_class(soh) == c for c in range(3)})
    for key, sel in selections.items():
        entry = {"samples": int(sel.sum()), "cells": int(np.unique(cell_ids[sel]).size),
                 "mape_pct": float("nan"), "p05": float("nan"), "p95": float("nan")}
        if sel.any():
            num = np.bincount(cell_ids[sel], weights=ape[sel], minlength=cell_ids.max() + 1)
            den = np.bincount(cell_ids[sel], minlength=cell_ids.max() + 1)
            lo, hi = cell_resampled_ratio(num, den, seed)
            entry.update(mape_pct=float(ape[sel].mean()), p05=float(lo), p95=float(hi))
        out[key] = entry
    return out


def neighbour_soh(points: np.ndarray, soh: np.ndarray, cells: np.ndarray, k: int = 10) -> dict:
    """How well an embedding's neighbours predict SOH, neighbours taken from other cells only.

    k-nearest-neighbour regression of SOH on standardised ``points``, leave one
    cell out.  Returns ``mae_pct`` (SOH points), ``stage_accuracy`` (the
    predicted SOH's class equals the true class) and ``within_stage_spearman``
    (rank agreement of predicted and true SOH inside each class, averaged over
    classes with at least 10 samples).
    """
    x = StandardScaler().fit_transform(points)
    est = np.empty_like(soh)
    for c in np.unique(cells):
        out = cells == c
        kk = min(k, int((~out).sum()))
        est[out] = KNeighborsRegressor(n_neighbors=kk).fit(x[~out], soh[~out]).predict(x[out])
    cls, cls_est = soh_class(soh), soh_class(est)
    rhos = [spearmanr(est[cls == c], soh[cls == c]).statistic for c in range(3)
            if (cls == c).sum() >= 10 and np.ptp(est[cls == c]) > 0]
    return {"mae_pct": float(np.mean(np.abs(est - soh)) * 100), "stage_accuracy": float(np.mean(cls == cls_est)),
            "within_stage_spearman": float(np.mean(rhos)) if rhos else float("nan")}
