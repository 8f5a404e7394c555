"""Training the life network: every (fold, seed) member in one program of the core.

All members share one sample table (every arrival of every cell).  What makes
a member is per-member data, passed as traced values: which rows it trains on
and which it validates on (row weights), and the standardisation of its own
training rows (feature means and spreads, log-life mean and spread).  So the
k cross-validation folds and the final all-cell model, each with
``ensemble_size`` seeds, train in ONE compiled program of
:func:`slbjax.train.loop.fit`.

Loss per row: ``(z - z_true)^2 + shape_weight * mean_j (share_j - share_true_j)^2``,
with ``z`` the standardised log remaining life and ``share_j = t_j / R`` the
first-passage time of level j as a share of the life (see
:mod:`slbjax.data.life`).  AdamW; early stopping on the member's validation cells.
The SOH estimator trains in the same way: a network without shape head
(``levels = 0``), ``z`` its SOH and ``shares`` an empty [S, 0] table.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from slbjax.models.life import LifeMLP
from slbjax.train import loop

STAT_KEYS = ("x_mean", "x_std", "z_mean", "z_std")  # what prediction needs of a member's hparams


@dataclasses.dataclass(frozen=True)
class MemberSpec:
    """One member: its training and validation cells (indices) and its seed."""

    train_cells: np.ndarray
    val_cells: np.ndarray
    seed: int


def member_hparams(specs: list[MemberSpec], cell: np.ndarray, x: np.ndarray,
                   log_life: np.ndarray) -> dict[str, np.ndarray]:
    """Per-member values, stacked: ``train_w``, ``val_w`` [N, S] row weights (from the
    sample table's cell index), ``x_mean``, ``x_std`` [N, F] and ``z_mean``, ``z_std``
    [N] (the standardisation of the member's training rows)."""
    out = {k: [] for k in ("train_w", "val_w", "x_mean", "x_std", "z_mean", "z_std")}
    for s in specs:
        tw = np.isin(cell, s.train_cells)
        out["train_w"].append(tw.astype(np.float32))
        out["val_w"].append(np.isin(cell, s.val_cells).astype(np.float32))
        out["x_mean"].append(x[tw].mean(0))
        sd = x[tw].std(0)
        out["x_std"].append(np.where(sd > 0, sd, 1.0))
        out["z_mean"].append(log_life[tw].mean())
        out["z_std"].append(max(float(log_life[tw].std()), 1e-6))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


@functools.lru_cache(maxsize=8)
def life_task(model: LifeMLP, num_rows: int, max_train_rows: int, batch_size: int,
              shape_weight: float, weight_decay: float) -> loop.Task:
    """The core's task (see the module doc); data: ``(x, log_life, shares)`` rows."""
    steps = math.ceil(max_train_rows / batch_size)
    need = steps * batch_size

    def standardise(data: loop.Data, hp) -> loop.Data:
        x, z, shares = data.train
        xs = (x - hp["x_mean"][None, :]) / hp["x_std"][None, :]
        zs = (z - hp["z_mean"]) / hp["z_std"]
        return loop.Data((xs, zs, shares), (xs, zs, shares, hp["val_w"]))

    def row_loss(params, x, z, shares):
        zp, sp = jax.vmap(lambda xi: model.apply(params, xi))(x)
        if not model.levels:  # a scalar regressor (the SOH estimator)
            return (zp - z) ** 2
        return (zp - z) ** 2 + shape_weight * jnp.mean((sp - shares) ** 2, axis=-1)

    def loss(params, batch, mask, rng, hp):
        x, z, shares = batch
        per_row = row_loss(params, x, z, shares)
        return jnp.sum(per_row * mask) / jnp.maximum(jnp.sum(mask), 1.0), {}

    def plan(rng, epoch, hp):
        rng, k, k_steps = jax.random.split(rng, 3)
        # this member's rows first, in random order; then the others (masked out)
        order = jnp.argsort(jax.random.uniform(k, (num_rows,)) - 2.0 * hp["train_w"])
        if need > num_rows:
            order = jnp.concatenate([order, jnp.zeros(need - num_rows, order.dtype)])
        idx = order[:need].reshape(steps, batch_size)
        real = (jnp.arange(need) < num_rows).reshape(steps, batch_size).astype(jnp.float32)
        mask = hp["train_w"][idx] * real
        return rng, idx, mask, jax.random.split(k_steps, steps)

    def validate(params, data, hp):
        x, z, shares, w = data.val
        return jnp.sum(row_loss(params, x, z, shares) * w) / jnp.maximum(jnp.sum(w), 1.0)

    return loop.Task(
        init=lambda key, data: model.init(key, data.train[0][0]), loss=loss, plan=plan,
        optimizer=lambda learning_rate: optax.adamw(learning_rate, weight_decay=weight_decay),
        prepare=standardise, validate=validate, val_name="loss")


def fit_members(model: LifeMLP, x: np.ndarray, log_life: np.ndarray, shares: np.ndarray,
                cell: np.ndarray, specs: list[MemberSpec], *, epochs: int, patience: int,
                batch_size: int, learning_rate: float, shape_weight: float,
                weight_decay: float, log=None) -> tuple[object, dict, list[loop.TrainResult]]:
    """Trains every member; returns (stacked params, stacked hparams, results)."""
    hp = member_hparams(specs, cell, x, log_life)
    max_rows = int(hp["train_w"].sum(1).max())
    task = life_task(model, len(x), max_rows, batch_size, float(shape_weight), float(weight_decay))
    keys = jax.vmap(lambda s: jnp.stack(jax.random.split(jax.random.key(s))))(
        jnp.asarray([s.seed for s in specs]))
    members = loop.Members(keys[:, 0], keys[:, 1], np.full(len(specs), learning_rate, np.float32), hp)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    results = loop.fit(task, loop.Data((f32(x), f32(log_life), f32(shares))), members,
                       epochs=epochs, patience=patience, log=log)
    return loop.stack_members([r.params for r in results]), hp, results


def predict_members(model: LifeMLP, params, hp: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N, S] log remaining life, [N, S, K] shares) of N members for raw features x [S, F]."""

    def one(p, h):
        xs = (jnp.asarray(x, jnp.float32) - h["x_mean"][None, :]) / h["x_std"][None, :]
        z, shares = jax.vmap(lambda xi: model.apply(p, xi))(xs)
        return z * h["z_std"] + h["z_mean"], shares

    stats = {k: hp[k] for k in STAT_KEYS}
    log_life, shares = jax.jit(jax.vmap(one))(params, stats)
    return np.asarray(log_life, np.float64), np.asarray(shares, np.float64)


def embed_members(model: LifeMLP, params, hp: dict, x: np.ndarray) -> np.ndarray:
    """[N, S, H] last hidden layer of N members for raw features x [S, F]."""

    def one(p, h):
        xs = (jnp.asarray(x, jnp.float32) - h["x_mean"][None, :]) / h["x_std"][None, :]
        _, state = jax.vmap(lambda xi: model.apply(p, xi, mutable=["intermediates"]))(xs)
        return state["intermediates"]["hidden"][0]

    stats = {k: hp[k] for k in ("x_mean", "x_std")}
    return np.asarray(jax.jit(jax.vmap(one))(params, stats), np.float64)
