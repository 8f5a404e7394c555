"""Consistency grouping of retired cells (Wang, Gao, Tian 2025, "deep sorting").

A partition of N cells is a ``groups`` array [N] of integer group labels
(any integers; a label's cells form one group).  Cell n's life is its
trajectory length L_n in cycles.

The method (:func:`deep_sort`): z-score the 36 curve features of derivative
order j = 1, k-means them into ``num_groups`` groups, then :func:`refine` the
partition on the z-scored j = 2 features and refine that on the j = 3 ones.

Metrics, as the data README (section 4) defines them:

* :func:`available_lifetime`: sum over groups of |g| * min_{n in g} L_n, / N
  (a group retires with its shortest-lived cell);
* :func:`aging_difference`: mean over all within-group pairs, pooled over the
  groups, of sum over cycles |Q_a - Q_b|, the shorter trajectory padded with
  ``pad_ah`` (1.2 Ah, the end-of-life capacity) to the longer one's length;
* :func:`capacity_utilisation`: Ah the cells deliver up to their group's
  retirement / Ah over their whole trajectories.

Baselines: :func:`kmeans_groups` on other columns, :func:`random_groups` and
the life-sorted :func:`oracle_groups` (an upper reference that uses the
answer).  :func:`share_of_oracle_gain` puts a value on the random-to-oracle scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

STEPS = ("initial", "first_refinement", "second_refinement")


# ------------------------------------------------------------------ metrics
def _group_ids(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct labels [G], index [N] of each cell's label in them)."""
    return np.unique(np.asarray(groups), return_inverse=True)


def group_minimum_life(groups: np.ndarray, lives: np.ndarray) -> np.ndarray:
    """[N] int: the life of the shortest-lived cell of each cell's group."""
    _, inv = _group_ids(groups)
    lives = np.asarray(lives)
    minimum = np.full(inv.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(minimum, inv, lives)
    return minimum[inv]


def available_lifetime(groups: np.ndarray, lives: np.ndarray) -> float:
    """Mean over cells of their group's minimum life (cycles).

    Args:
      groups: [N] group labels.
      lives: [N] cell lives L_n (cycles).
    """
    return float(group_minimum_life(groups, lives).sum() / len(lives))


def padded_trajectories(trajectories: Sequence[np.ndarray], pad_ah: float = 1.2) -> np.ndarray:
    """[N, max L] capacities, each row padded with ``pad_ah`` after its end."""
    out = np.full((len(trajectories), max(len(t) for t in trajectories)), pad_ah, np.float64)
    for n, t in enumerate(trajectories):
        out[n, : len(t)] = t
    return out


def aging_distances(trajectories: Sequence[np.ndarray], pad_ah: float = 1.2) -> np.ndarray:
    """[N, N] sum over cycles of |Q_a - Q_b| (Ah cycles), the shorter padded with ``pad_ah``.

    Padding every row to the longest life gives the same sums as padding each
    pair to its longer member: past both ends both rows read ``pad_ah``.
    """
    q = padded_trajectories(trajectories, pad_ah)
    return np.stack([np.abs(q - row).sum(axis=1) for row in q])


def aging_difference_from_distances(groups: np.ndarray, distances: np.ndarray) -> float:
    """:func:`aging_difference` from precomputed [N, N] :func:`aging_distances`.

    Returns NaN when no group has two cells (no pair).
    """
    groups = np.asarray(groups)
    same = (groups[:, None] == groups[None, :]) & np.triu(np.ones(distances.shape, bool), 1)
    return float(distances[same].mean()) if same.any() else float("nan")


def aging_difference(groups: np.ndarray, trajectories: Sequence[np.ndarray],
                     pad_ah: float = 1.2) -> float:
    """Mean within-group pairwise aging difference (Ah cycles), pairs pooled over groups.

    Large groups weigh with their number of pairs; one-cell groups have none.

    Args:
      groups: [N] group labels.
      trajectories: N arrays [L_n] of capacity (Ah) per cycle.
      pad_ah: value that extends the shorter trajectory of a pair.
    """
    return aging_difference_from_distances(groups, aging_distances(trajectories, pad_ah))


def capacity_utilisation(groups: np.ndarray, trajectories: Sequence[np.ndarray]) -> float:
    """Share of the cells' total Ah that they deliver before their group retires.

    sum_n sum_{t < min life of n's group} Q_n[t] / sum_n sum_t Q_n[t].

    Args:
      groups: [N] group labels.
      trajectories: N arrays [L_n] of capacity (Ah) per cycle.
    """
    cut = group_minimum_life(groups, np.array([len(t) for t in trajectories]))
    used = sum(float(t[:c].sum()) for t, c in zip(trajectories, cut, strict=True))
    return used / sum(float(t.sum()) for t in trajectories)


def share_of_oracle_gain(value: float, random_value: float, oracle_value: float) -> float:
    """(value - random) / (oracle - random): 0 = random, 1 = oracle (either metric direction).

    NaN when the oracle is no different from random.
    """
    gain = oracle_value - random_value
    return float((value - random_value) / gain) if gain != 0 else float("nan")


# ------------------------------------------------------------------ method
def standardize(x: np.ndarray) -> np.ndarray:
    """[N, D] z-scores with the population std (scikit-learn ``StandardScaler``).

    A constant column becomes 0 (the scaler keeps scale 1 there).
    """
    return StandardScaler().fit_transform(np.asarray(x, dtype=np.float64))


def kmeans_groups(x: np.ndarray, num_groups: int, seed: int, n_init: int = 10) -> np.ndarray:
    """[N] labels of k-means (k-means++, ``n_init`` restarts) on the z-scored [N, D] ``x``.

    Runs on one thread: on 86 cells threads only cost time, and one thread
    makes the sums, hence the labels, the same on every machine.
    """
    km = KMeans(n_clusters=num_groups, init="k-means++", n_init=n_init, random_state=seed)
    with threadpool_limits(limits=1):
        return km.fit_predict(standardize(x)).astype(np.int64)


def refine(labels: np.ndarray, x: np.ndarray, max_passes: int = 10, *,
           return_passes: bool = False):
    """Batch reassignment of cells to the strictly nearest group centroid.

    Each pass computes every group's centroid in ``x`` from the current
    partition, then moves every cell whose nearest centroid (Euclidean) is
    strictly closer than its own group's (margin 0; among equally near other
    centroids the lowest label wins).  Passes stop after one without moves or
    after ``max_passes``.

    A group that loses all its cells stays empty: it has no centroid, so no
    cell can join it again, and the partition goes on with fewer groups
    (labels are not renumbered).  A mean over no cells (NaN, with which every
    distance comparison is false) behaves the same way; reseeding the group
    would make the step more than a reassignment.

    Args:
      labels: [N] starting group labels (e.g. the previous step's partition).
      x: [N, D] features, already z-scored.
      max_passes: most passes.
      return_passes: also return the number of passes run (a pass without
        moves counts; the published runs stop at passes 5 and 3).

    Returns:
      [N] int labels (same label values), or (labels, passes).
    """
    x = np.asarray(x, dtype=np.float64)
    ids, labels = _group_ids(labels)
    passes = 0
    while passes < max_passes:
        passes += 1
        counts = np.bincount(labels, minlength=len(ids))
        sums = np.zeros((len(ids), x.shape[1]))
        np.add.at(sums, labels, x)
        centroids = sums / np.maximum(counts, 1)[:, None]
        dist = np.sqrt(((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
        dist[:, counts == 0] = np.inf
        nearest = np.argmin(dist, axis=1)
        rows = np.arange(len(labels))
        move = dist[rows, nearest] < dist[rows, labels]
        if not move.any():
            break
        labels = np.where(move, nearest, labels)
    out = ids[labels].astype(np.int64)
    return (out, passes) if return_passes else out


def deep_sort(curves: Mapping[int, np.ndarray], num_groups: int = 8, seed: int = 78825,
              n_init: int = 10, max_passes: int = 10) -> dict[str, np.ndarray]:
    """The published method: k-means on j = 1, refined on j = 2, then on j = 3.

    Args:
      curves: derivative order j (1, 2, 3) -> [N, 36] raw curve features.
      num_groups, seed, n_init: the initial k-means (``random_state`` = seed).
      max_passes: most passes of each :func:`refine`.

    Returns:
      {step: [N] labels} for :data:`STEPS`.
    """
    initial = kmeans_groups(np.asarray(curves[1]), num_groups, seed, n_init)
    first = refine(initial, standardize(np.asarray(curves[2])), max_passes)
    second = refine(first, standardize(np.asarray(curves[3])), max_passes)
    return dict(zip(STEPS, (initial, first, second), strict=True))


# ------------------------------------------------------------------ baselines
def random_groups(sizes: Sequence[int], seed: int) -> np.ndarray:
    """[sum(sizes)] labels of a uniformly random partition with these group sizes."""
    labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    return np.random.default_rng(seed).permutation(labels)


def oracle_groups(lives: np.ndarray, num_groups: int) -> np.ndarray:
    """[N] labels: cells sorted by true life (ties by position), cut into near-equal runs.

    The first ``N % num_groups`` (shortest-lived) groups hold one cell more.
    Uses the answer, so it is an upper reference, not a method.
    """
    order = np.argsort(np.asarray(lives), kind="stable")
    labels = np.empty(len(order), np.int64)
    for g, part in enumerate(np.array_split(order, num_groups)):
        labels[part] = g
    return labels


def group_sizes(groups: np.ndarray) -> np.ndarray:
    """[G] sizes of the non-empty groups, in label order."""
    return np.unique(np.asarray(groups), return_counts=True)[1]


def best_partition(score: np.ndarray, num_groups: int, min_size: int) -> np.ndarray:
    """[N] labels maximising the available lifetime if ``score`` were the true lives.

    A group lives as long as its shortest-lived cell, so an optimal partition
    is a set of consecutive runs of the cells sorted by score; dynamic
    programming over the run boundaries finds the ``num_groups`` runs of at
    least ``min_size`` cells with the largest sum of (size x smallest score).
    Labels are 0 .. num_groups - 1 from the shortest-lived run up.
    """
    order = np.argsort(score, kind="stable")
    s = np.asarray(score, np.float64)[order]
    return _runs_by_dp(order, lambda j, i: (i - j) * s[j], num_groups, min_size)


def _runs_by_dp(order: np.ndarray, run_value, num_groups: int, min_size: int) -> np.ndarray:
    """[N] labels: the ``num_groups`` runs of at least ``min_size`` cells of ``order`` with the
    largest sum of ``run_value(j, i)`` (the value of sorted cells j .. i - 1, vectorised over j)."""
    n = len(order)
    if num_groups * min_size > n:
        raise ValueError(f"{num_groups} groups of at least {min_size} need {num_groups * min_size} "
                         f"cells, got {n}")
    best = np.full((num_groups + 1, n + 1), -np.inf)
    best[0, 0] = 0.0
    start = np.zeros((num_groups + 1, n + 1), np.int64)
    for k in range(1, num_groups + 1):
        for i in range(k * min_size, n + 1):
            j = np.arange(0, i - min_size + 1)
            value = best[k - 1, j] + run_value(j, i)
            start[k, i] = j[int(np.argmax(value))]
            best[k, i] = value.max()
    labels = np.empty(n, np.int64)
    i = n
    for k in range(num_groups, 0, -1):
        labels[order[start[k, i]:i]] = k - 1
        i = start[k, i]
    return labels


def expected_partition(log_mu: np.ndarray, log_sd: np.ndarray, num_groups: int, min_size: int,
                       offset: float = 0.0, samples: int = 4000, seed: int = 0) -> np.ndarray:
    """[N] labels maximising the EXPECTED available lifetime under predicted life distributions.

    Cell n's life is ``offset`` + a log-normal, log(L_n - offset) ~ N(``log_mu[n]``,
    ``log_sd[n]``) (a calibrated predictive spread; ``offset`` e.g. the measured cycles
    before a predicted remaining life), drawn ``samples`` times with common random numbers;
    a run of the cells sorted by ``log_mu`` is worth size x E[min of its lives].  The
    dynamic programme of :func:`best_partition` then picks the best runs.  Against
    sorting on the point predictions, a cell whose life is uncertain is less likely to
    be put where it would cut a long-lived group short.  With ``log_sd`` = 0 this is
    :func:`best_partition` of ``offset + exp(log_mu)``.  Labels run from the shortest-lived group up.
    """
    mu, sd = np.asarray(log_mu, np.float64), np.asarray(log_sd, np.float64)
    if mu.shape != sd.shape or mu.ndim != 1 or not (np.isfinite(sd).all() and (sd >= 0).all()):
        raise ValueError("log_mu and log_sd must be [N] arrays, log_sd finite and >= 0")
    order = np.argsort(mu, kind="stable")
    n = len(order)
    noise = np.random.default_rng(seed).standard_normal((samples, n))
    draws = offset + np.exp(mu[order] + sd[order] * noise)
    # expected[j, i] = E[min of sorted cells j .. i - 1]: a running minimum from each start j
    expected = np.zeros((n + 1, n + 1))
    for j in range(n):
        expected[j, j + 1:] = np.minimum.accumulate(draws[:, j:], axis=1).mean(0)
    return _runs_by_dp(order, lambda j, i: (i - j) * expected[j, i], num_groups, min_size)


def group_by_life(predicted_life: np.ndarray, num_groups: int, group_size: int,
                  min_size: int = 2) -> np.ndarray:
    """[N] labels from predicted lives: runs of ``group_size`` cells of the predicted-life
    order (the last run keeps the rest) when it is > 0, else the ``num_groups`` groups of
    at least ``min_size`` cells that :func:`best_partition` finds for the predictions."""
    if group_size > 0:
        num_groups = max(1, len(predicted_life) // group_size)
        order = np.argsort(predicted_life, kind="stable")
        labels = np.minimum(np.arange(len(order)) // group_size, num_groups - 1)
        out = np.empty(len(order), np.int64)
        out[order] = labels
        return out
    return best_partition(predicted_life, num_groups, min(min_size, len(predicted_life) // num_groups))
