"""Expert labels made comparable across members and runs.

Expert numbers are arbitrary: two seeds can learn the same regimes under
different numbers.  :func:`align_members` orders one member's experts by the
mean SOH of the samples that choose them (expert 1 = the earliest-life
regime) and matches every other member to it with
``scipy.optimize.linear_sum_assignment`` on how often two experts are chosen
for the same samples.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def chosen(weights: np.ndarray, k: int) -> np.ndarray:
    """[..., E] bool: the k largest weights of each sample (ties broken by index)."""
    order = np.argsort(-weights, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(weights.shape, bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def soh_order(weights: np.ndarray, soh: np.ndarray, k: int) -> np.ndarray:
    """Expert numbers sorted by decreasing mean SOH of the samples that choose them.

    Experts no sample chooses come last (in their own order).

    Args:
      weights: [M, E]; soh: [M].

    Returns:
      [E] int: ``order[i]`` is the expert given label i.
    """
    c = chosen(weights, k)
    used = c.sum(0)
    centre = np.where(used > 0, (c * soh[:, None]).sum(0) / np.maximum(used, 1), -np.inf)
    return np.argsort(-centre, kind="stable")


def match(reference: np.ndarray, other: np.ndarray, k: int) -> np.ndarray:
    """The relabelling of ``other``'s experts that best agrees with ``reference``.

    Args:
      reference, other: [M, E] weights of two members on the same samples.

    Returns:
      [E] int: ``perm[i]`` is ``other``'s expert that matches reference expert i
      (maximises the number of samples on which both choose them).
    """
    co = chosen(reference, k).astype(np.int64).T @ chosen(other, k).astype(np.int64)  # [E, E]
    rows, cols = linear_sum_assignment(co, maximize=True)
    perm = np.empty(co.shape[0], np.int64)
    perm[rows] = cols
    return perm


def align_members(weights: np.ndarray, soh: np.ndarray, k: int) -> np.ndarray:
    """Permutations that put every member's experts on one set of labels.

    Args:
      weights: [N, M, E] router weights of N members on the same M samples.
      soh: [M] SOH of the samples.

    Returns:
      [N, E] int: ``perms[n, i]`` is member n's expert carrying label i; label 0
      is the expert of the highest-SOH (earliest) samples of member 0.
      Apply with :func:`relabel`.
    """
    ref = soh_order(weights[0], soh, k)
    ref_w = weights[0][:, ref]
    perms = [ref] + [match(ref_w, weights[n], k) for n in range(1, weights.shape[0])]
    return np.stack(perms)


def relabel(weights: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """[N, M, E] weights with member n's columns taken in the order ``perms[n]``."""
    return np.stack([weights[n][:, perms[n]] for n in range(weights.shape[0])])
