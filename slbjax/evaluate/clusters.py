"""Which cells a network's representation puts together, and whether they age alike.

Wu et al. 2025 (Commun. Eng. 4, 151) estimate a cell's state and cluster cells
on the estimator's learned representation.  Here a representation (one row
per cell: e.g. the last hidden layer of every member of an ensemble, side by
side, which does not depend on how members order their units) is clustered
with scikit-learn's k-means, and the clusters are compared with life-based
groups by the adjusted Rand index and by the share of the variance of log
life that the clusters explain.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score


def kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[N] labels 0..k-1: k-means (k-means++ start, 10 restarts) of the standardised
    columns of ``x`` [N, D] (constant columns dropped)."""
    x = np.asarray(x, np.float64)
    sd = x.std(0)
    keep = sd > 1e-12 * np.maximum(1.0, np.abs(x).max(0))
    if not keep.any():
        return np.zeros(len(x), np.int64)
    z = (x[:, keep] - x[:, keep].mean(0)) / sd[keep]
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z).astype(np.int64)


def life_variance_explained(labels: np.ndarray, lives: np.ndarray) -> float:
    """Share (0..1) of the variance of log life between the clusters' means: 1 when every
    cluster holds cells of one life, 0 when each cluster is a sample of the whole."""
    y = np.log(np.asarray(lives, np.float64))
    total = np.sum((y - y.mean()) ** 2)
    if total == 0:
        return float("nan")
    within = sum(np.sum((y[labels == g] - y[labels == g].mean()) ** 2) for g in np.unique(labels))
    return float(1.0 - within / total)


def agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Adjusted Rand index of two partitions (1 identical, about 0 unrelated)."""
    return float(adjusted_rand_score(reference, labels))
