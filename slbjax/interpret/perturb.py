"""What the router's inputs and experts are worth: perturbations of a finished run.

* :func:`noise_importance` — the paper's Fig. 4f: Gaussian noise (sigma in units
  of the training standard deviation, the features being standardised) on one
  physics feature at a time, the others as measured.
* :func:`permutation_importance` — one feature shuffled across the samples.
* :func:`router_attribution` — exact: the router is linear, so each logit is a
  sum of per-feature terms ``x_f * K[f, e]``.
* :func:`integrated_gradients` — of the mean predicted capacity with respect to
  the standardised features (``jax.grad``), from the training mean.
* :func:`knockout` — one expert removed from every member (its weight zeroed,
  the rest renormalised), the change in MAPE by SOH class.

Changes in MAPE carry a 90 % interval from resampling whole test cells
(:func:`slbjax.interpret.stats.cell_resampled_ratio`), since samples of one
cell are not independent.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slbjax.evaluate import metrics
from slbjax.interpret.labels import chosen
from slbjax.interpret.samples import Routed, RoutedRun
from slbjax.interpret.stats import cell_resampled_ratio, soh_class


def ape_sums(pred: np.ndarray, target: np.ndarray, cell_ids: np.ndarray, num_cells: int) -> np.ndarray:
    """[C] sum over each cell's points of the absolute percentage error (pred, target [M, L])."""
    ape = metrics.ape_pct(pred, target).sum(1)
    return np.bincount(cell_ids, weights=ape, minlength=num_cells)


class _Scorer:
    """Pooled MAPE and per-cell APE sums of the members' mean on one role."""

    def __init__(self, rr: RoutedRun, r: Routed):
        self.rr, self.r = rr, r
        self.num_cells = len(r.windows.cell_names)
        self.target = np.asarray(r.windows.target, np.float64)
        self.counts = np.bincount(r.cell_ids, minlength=self.num_cells) * self.target.shape[1]
        self.base_sums = ape_sums(r.pred.mean(0), self.target, r.cell_ids, self.num_cells)
        self.base = float(self.base_sums.sum() / self.counts.sum())
        self.base_chosen = chosen(r.weights, rr.top_k)

    def score(self, features: np.ndarray | None = None, mask: np.ndarray | None = None):
        """(APE sums [C], share of (member, sample) whose chosen experts changed, pred mean [M, L])."""
        batch = self.r.batch if features is None else self.r.batch._replace(features=features.astype(np.float32))
        pred, w, _ = self.rr.evaluate(batch, expert_mask=mask)
        changed = float(np.mean(np.any(chosen(w, self.rr.top_k) != self.base_chosen, axis=-1)))
        mean = pred.mean(0)
        return ape_sums(mean, self.target, self.r.cell_ids, self.num_cells), changed, mean

    def row(self, sums_per_draw: list[np.ndarray], changes: list[float], seed: int) -> dict:
        delta = np.mean([a - self.base_sums for a in sums_per_draw], axis=0)  # exactly 0 where nothing moved
        d = float(delta.sum() / self.counts.sum())
        lo, hi = cell_resampled_ratio(delta, self.counts, seed)  # per-cell APE-sum change / points
        return {"mape_pct": self.base + d, "delta_mape_pct": d,
                "relative_change_pct": d / self.base * 100, "delta_p05": float(lo), "delta_p95": float(hi),
                "expert_change_rate": float(np.mean(changes))}


def _per_feature(rr: RoutedRun, names: list[str], role: str, repeats: int, seed: int,
                 replace_column) -> tuple[float, list[dict]]:
    """Scores ``repeats`` perturbations of each feature column in turn.

    ``replace_column(column [M], rng) -> new column [M]``.
    """
    s = _Scorer(rr, rr.roles[role])
    rng = np.random.default_rng(seed)
    x = np.asarray(s.r.batch.features)
    rows = []
    for f, name in enumerate(names):
        sums, changes = [], []
        for _ in range(repeats):
            changed = x.copy()
            changed[:, f] = replace_column(x[:, f], rng)
            a, c, _ = s.score(changed)
            sums.append(a)
            changes.append(c)
        rows.append({"feature": name, **s.row(sums, changes, seed)})
    return s.base, rows


def noise_importance(rr: RoutedRun, names: list[str], role: str = "test", draws: int = 10,
                     sigma: float = 1.0, seed: int = 0) -> tuple[float, list[dict]]:
    """(baseline MAPE %, one row per feature: MAPE with noise on it, its change and
    interval, and the rate at which the chosen experts change)."""
    return _per_feature(rr, names, role, draws, seed,
                        lambda col, rng: col + sigma * rng.standard_normal(len(col)))


def permutation_importance(rr: RoutedRun, names: list[str], role: str = "test", repeats: int = 5,
                           seed: int = 0) -> list[dict]:
    """One row per feature: MAPE with that feature shuffled across the samples."""
    return _per_feature(rr, names, role, repeats, seed, lambda col, rng: rng.permutation(col))[1]


def router_attribution(rr: RoutedRun, role: str = "test") -> np.ndarray:
    """[N, F] share of each feature in the router's logits, per member (rows sum to 1).

    The logit of expert e is ``b_e + sum_f x_f K[f, e]``; the share of feature f
    is the mean over samples and experts of ``|x_f K[f, e]|`` over the sum over features.
    """
    kernel = np.asarray(rr.run.params["params"]["router"]["logits"]["kernel"], np.float64)  # [N, F, E]
    x = np.asarray(rr.roles[role].batch.features, np.float64)  # [M, F]
    mag = np.abs(x)[None, :, :, None] * np.abs(kernel)[:, None, :, :]  # [N, M, F, E]
    per = mag.mean(axis=(1, 3))
    return per / per.sum(1, keepdims=True)


class IntegratedGradients(NamedTuple):
    """Integrated gradients per feature, with 90 % intervals over resampled test cells."""

    mean_abs_ah: np.ndarray  # [F] mean |IG| over the samples (Ah)
    share: np.ndarray  # [F] mean_abs_ah / its sum
    share_p05: np.ndarray  # [F] 5 % quantile of the share over resampled cells
    share_p95: np.ndarray  # [F]
    completeness_gap_ah: float  # mean |sum_f IG - (F(x) - F(0))|


def integrated_gradients(rr: RoutedRun, role: str = "test", steps: int = 16, max_samples: int = 256,
                         seed: int = 0) -> IntegratedGradients:
    """Integrated gradients of the members' mean predicted capacity (Ah, mean over the horizon).

    From the training mean (0 in standardised units) to each sample's features,
    ``steps`` midpoint steps, on up to ``max_samples`` samples.  The top-k
    choice makes the output jump, so the completeness gap is not 0.
    """
    r = rr.roles[role]
    idx = np.arange(r.batch.size)
    if idx.size > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(idx.size, max_samples, replace=False))
    q, x, u = (jnp.asarray(np.asarray(a)[idx]) for a in (r.batch.qv, r.batch.features, r.batch.load))
    model, params = rr.run.model, rr.run.params

    def mean_capacity(f, q1, u1):
        ys = jax.vmap(lambda p: model.apply(p, q1, f, u1)[0])(params)
        return ys.mean()

    grad = jax.grad(mean_capacity)
    alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps

    @jax.jit
    def one(q1, f, u1):
        g = jax.lax.map(lambda a: grad(a * f, q1, u1), alphas).mean(0)
        return f * g, mean_capacity(f, q1, u1) - mean_capacity(jnp.zeros_like(f), q1, u1)

    ig, diff = jax.lax.map(lambda t: one(*t), (q, x, u))
    signed, diff = np.asarray(ig, np.float64), np.asarray(diff, np.float64)
    gap = float(np.mean(np.abs(signed.sum(1) - diff)))
    ig = np.abs(signed)
    mean_abs = ig.mean(0)
    per_cell = np.zeros((len(r.windows.cell_names), ig.shape[1]))
    np.add.at(per_cell, np.asarray(r.cell_ids)[idx], ig)
    # a share is a ratio of sums over the same samples: resample cells on the per-cell |IG| sums
    lo, hi = cell_resampled_ratio(per_cell, per_cell.sum(1), seed)
    total = mean_abs.sum()
    share = mean_abs / total if total > 0 else mean_abs
    return IntegratedGradients(mean_abs, share, lo, hi, gap)


def knockout(rr: RoutedRun, perms: np.ndarray, role: str = "test") -> tuple[dict, list[dict]]:
    """MAPE by SOH class with each expert label removed from every member.

    Args:
      perms: [N, E] from :func:`slbjax.interpret.labels.align_members`.

    Returns:
      (baseline MAPE by class {class: %}, one row per expert label: MAPE by class and the change).
    """
    r = rr.roles[role]
    target = np.asarray(r.windows.target, np.float64)
    cls = soh_class(r.soh)

    def by_class(pred):
        ape = metrics.mape_pct(pred, target, axis=1)
        return {c: (float(ape[cls == c].mean()) if np.any(cls == c) else float("nan")) for c in range(3)}

    base = by_class(r.pred.mean(0))
    n, e = perms.shape
    rows = []
    for label in range(e):
        mask = np.ones((n, e), np.float32)
        mask[np.arange(n), perms[:, label]] = 0.0
        pred, _, _ = rr.evaluate(r.batch, expert_mask=mask)
        after = by_class(pred.mean(0))
        rows.append({"expert": label + 1, **{f"class{c}_mape_pct": after[c] for c in range(3)},
                     **{f"class{c}_delta_mape_pct": after[c] - base[c] for c in range(3)}})
    return base, rows
