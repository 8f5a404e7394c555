"""A finished iMOE run's samples, routed: what every interpretability analysis reads.

:func:`route_run` reloads a run (:func:`slbjax.inference.load_run`), rebuilds
its train / val / test windows from the data exactly as training did, and
evaluates every member on them: trajectories, router weights and the AMDP
embedding (the trend fed to the LSTM head).  Inputs are standardised with the
normaliser stored in the checkpoint, so nothing is refitted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from slbjax.data.imoe_inputs import load_cells, nominal_capacity_ah, to_batch, windows_for
from slbjax.data.windows import Batch, Windows
from slbjax.errors import RunDirError
from slbjax.inference import Run, load_run

ROLES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Routed:
    """One role's samples of a run, evaluated by every member.

    Attributes:
      windows: the samples (raw features, targets, cells, cycles).
      batch: the model inputs (standardised with the run's normalisers).
      pred: [N, M, L] member trajectories (Ah).
      weights: [N, M, E] member router weights, each member's own expert numbers.
      trend: [N, M, L] the trend each member feeds its head (the AMDP embedding).
      soh: [M] capacity at the start cycle over the rated capacity.
      life: [M] position of the start among its cell's prediction starts, 0 (first) .. 1 (last).
    """

    windows: Windows
    batch: Batch
    pred: np.ndarray
    weights: np.ndarray
    trend: np.ndarray
    soh: np.ndarray
    life: np.ndarray

    @property
    def cells(self) -> np.ndarray:
        """[M] cell name of each sample."""
        return np.asarray(self.windows.cell_names, dtype=object)[self.windows.cell_index]

    @property
    def cell_ids(self) -> np.ndarray:
        """[M] integer cell index (groups for cell-level resampling)."""
        return np.asarray(self.windows.cell_index)


@dataclasses.dataclass(frozen=True, eq=False)
class RoutedRun:
    """A run, its compiled member-vmapped forward pass and its routed samples by role
    (roles without samples are absent)."""

    run: Run
    nominal_ah: float
    roles: dict[str, Routed]
    apply: Any

    @property
    def top_k(self) -> int:
        return int(self.run.model.top_k)

    @property
    def num_experts(self) -> int:
        return int(self.run.model.num_experts)

    def evaluate(self, batch: Batch, expert_mask: np.ndarray | None = None,
                 chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pred [N, M, L], weights [N, M, E], trend [N, M, L]) of every member on ``batch``.

        ``expert_mask`` [N, E] of 0/1, one row per member in the member's own
        expert numbers, knocks experts out (their weight is removed and the rest
        renormalised); ``None`` is the model as trained.
        """
        n = self.run.ensemble_size
        mask = (np.ones((n, self.num_experts), np.float32) if expert_mask is None
                else np.asarray(expert_mask, np.float32))
        parts = [self.apply(self.run.params, batch.qv[s:s + chunk], batch.features[s:s + chunk],
                            batch.load[s:s + chunk], mask)
                 for s in range(0, batch.size, chunk)]
        return tuple(np.concatenate([np.asarray(p[i]) for p in parts], 1) for i in range(3))


def member_apply(run: Run):
    """jit(vmap over members (vmap over samples)) of the model: (pred, weights, trend)."""
    model = run.model

    def one(params, q, f, u, mask):
        (y, w), state = model.apply(params, q, f, u, expert_mask=mask, mutable=["intermediates"])
        return y, w, state["intermediates"]["trend"][0]

    per_sample = jax.vmap(one, in_axes=(None, 0, 0, 0, None))
    return jax.jit(jax.vmap(per_sample, in_axes=(0, None, None, None, 0)))


def route_run(path: str | Path, data_dir: Path | None, require_router: bool = True,
              roles: tuple[str, ...] = ROLES) -> RoutedRun:
    """Reloads an iMOE run and evaluates its members on the samples of ``roles`` (test always).

    ``require_router=False`` also accepts iMOE-linear runs (their embedding is
    compared in Fig. 4g; their "weights" are a constant [1]).

    Raises:
      RunDirError: not an iMOE run, or (with ``require_router``) one without a router.
    """
    run = load_run(path)
    cfg = run.config
    if cfg.model.arch != "imoe":
        raise RunDirError(f"{path} is a {cfg.model.arch} run: it has no router to interpret")
    if require_router and cfg.model.router != "moe":
        raise RunDirError(f"{path} is an iMOE-linear run (model.router={cfg.model.router!r}): "
                          "it has no router to interpret; pass it with --linear next to an iMOE run")
    splits = load_cells(cfg, data_dir)
    nominal = nominal_capacity_ah(cfg)
    routed = RoutedRun(run, nominal, {}, member_apply(run))
    for role in ROLES:
        if role not in roles and role != "test":
            continue
        w = windows_for(cfg, getattr(splits, role))
        if w is None or len(w) == 0:
            continue
        batch = to_batch(w, run.feature_normaliser, run.load_normaliser)
        pred, weights, trend = routed.evaluate(batch)
        life = position_in_cell(w.cell_index, w.start_row)
        routed.roles[role] = Routed(w, batch, pred, weights, trend,
                             soh=np.asarray(w.target[:, 0], np.float64) / nominal, life=life.astype(np.float64))
    if "test" not in routed.roles:
        raise RunDirError(f"{path}: the run has no test samples to interpret")
    return routed


def position_in_cell(cell_index: np.ndarray, start_row: np.ndarray) -> np.ndarray:
    """[M] float: rank of each start among its cell's starts over (count - 1); 0 for a lone start.

    The position in life the authors colour their per-cell t-SNE by; over the
    starts rather than the recorded rows, so a cell's last third of life holds
    samples even when its last ``horizon`` rows cannot start a prediction.
    """
    out = np.zeros(len(start_row), np.float64)
    for c in np.unique(cell_index):
        sel = np.flatnonzero(cell_index == c)
        ranks = np.argsort(np.argsort(start_row[sel], kind="stable"), kind="stable")
        out[sel] = ranks / max(len(sel) - 1, 1)
    return out
