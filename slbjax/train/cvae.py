"""Vectorised CVAE training: every (case, seed) lane in ONE jit-compiled program.

The eight SOC cases of the paper differ only in which rows they train on, and
seeds differ only in their PRNG keys, so all of them are lanes of one program:

* the data (``features`` [N, F], ``conditions`` [N, C], raw units) are shared;
  each lane has a training mask [N] and its own min-max normalisers (arrays
  [F] and [C]), so normalisation happens inside the program;
* every epoch each lane draws a random permutation of its own training rows
  (uniform scores, non-training rows pushed to the end, ``argsort``); step j
  takes positions ``j*B ... j*B+B-1`` of it; positions past the lane's row
  count are masked out of the loss, exactly like the short last batch of a
  Keras ``fit`` epoch;
* all lanes run ``ceil(max_rows / B)`` steps per epoch; a step in which a lane
  has no valid row leaves its parameters and optimiser state untouched, so a
  lane trains exactly as it would alone;
* the epoch loop is a ``lax.scan`` over epochs around a ``lax.scan`` over
  steps, the whole function is ``jax.vmap``-ed over lanes and ``jax.jit``-ed.

Keys: lane key ``k``; parameters from ``fold_in(k, 0)``; epoch ``e`` uses
``fold_in(fold_in(k, 1), e)``, split into a permutation key and a step key;
step ``j`` uses ``fold_in(step_key, j)`` split into one ``latent`` key per
batch row.  No key depends on the number of steps or lanes, which is what
makes the vmapped and the per-lane trainings agree.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from slbjax.models.cvae import PulseCVAE, loss_terms


# ----------------------------------------------------------------- normalisers
def fit_minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise (min, max) of ``x`` [N, D] (scikit-learn's MinMaxScaler fit)."""
    x = np.asarray(x, np.float64)
    return x.min(axis=0), x.max(axis=0)


def _span(lo, hi):
    span = hi - lo
    # a constant column maps to 0, as scikit-learn does
    return span + (span == 0)


def minmax_apply(x, lo, hi):
    """``(x - lo) / (hi - lo)`` (works on numpy and jax arrays)."""
    return (x - lo) / _span(lo, hi)


def minmax_invert(y, lo, hi):
    """Inverse of :func:`minmax_apply`."""
    return y * _span(lo, hi) + lo


# ------------------------------------------------------------------ lane input
@dataclasses.dataclass(frozen=True)
class LaneInputs:
    """What the vectorised trainer needs, for L lanes over N shared rows.

    Attributes:
      features: [N, F] raw features.
      conditions: [N, C] raw conditions (SOC fraction, SOH).
      train_mask: [L, N] bool, the rows each lane trains on.
      feature_lo, feature_hi: [L, F] per-lane feature normaliser.
      cond_lo, cond_hi: [L, C] per-lane condition normaliser.
      keys: [L] typed PRNG keys.
      w_rec, w_kl: [L] loss weights (traced values, so they may differ per lane).
    """

    features: np.ndarray
    conditions: np.ndarray
    train_mask: np.ndarray
    feature_lo: np.ndarray
    feature_hi: np.ndarray
    cond_lo: np.ndarray
    cond_hi: np.ndarray
    keys: jax.Array
    w_rec: np.ndarray
    w_kl: np.ndarray

    @property
    def num_lanes(self) -> int:
        return int(self.train_mask.shape[0])

    def lane(self, i: int) -> LaneInputs:
        """The single-lane inputs of lane ``i`` (leading axis kept, length 1)."""
        sl = slice(i, i + 1)
        return dataclasses.replace(
            self,
            train_mask=self.train_mask[sl],
            feature_lo=self.feature_lo[sl],
            feature_hi=self.feature_hi[sl],
            cond_lo=self.cond_lo[sl],
            cond_hi=self.cond_hi[sl],
            keys=self.keys[sl],
            w_rec=self.w_rec[sl],
            w_kl=self.w_kl[sl],
        )


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Output of :func:`train_lanes`.

    Attributes:
      params: parameter pytree, every leaf with a leading lane axis [L, ...].
      epoch_loss: [L, E] mean training loss per epoch.
      steps_per_epoch: scan length of one epoch.
      compile_seconds: time to trace and compile the program.
      run_seconds: time to run it (blocking until done).
    """

    params: Any
    epoch_loss: np.ndarray
    steps_per_epoch: int
    compile_seconds: float
    run_seconds: float


def lane_key(seed: int, seed_index: int, case: int) -> jax.Array:
    """The training key of one (seed, case) lane; independent of the lane layout."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), seed_index), case)


# -------------------------------------------------------------------- program
@functools.lru_cache(maxsize=8)
def _train_program(
    model_kwargs: tuple,
    epochs: int,
    batch_size: int,
    steps_per_epoch: int,
    learning_rate: float,
    adam_eps: float,
    lane_chunk: int,
):
    model = PulseCVAE(**dict(model_kwargs))
    optimizer = optax.adam(learning_rate, eps=adam_eps)
    B = batch_size

    def batch_loss(params, x, c, valid, keys, w_rec, w_kl):
        def one(xi, ci, ki):
            x_hat, mean, logvar = model.apply(params, xi, ci, rngs={"latent": ki})
            return loss_terms(xi, x_hat, mean, logvar)

        rec, kl = jax.vmap(one)(x, c, keys)
        per_row = w_rec * rec + w_kl * kl
        weight = valid / jnp.maximum(valid.sum(), 1.0)
        return jnp.sum(weight * per_row)

    grad_fn = jax.value_and_grad(batch_loss)

    def train_one(features, conditions, mask, f_lo, f_hi, c_lo, c_hi, key, w_rec, w_kl):
        n = features.shape[0]
        x_all = minmax_apply(features, f_lo, f_hi)
        c_all = minmax_apply(conditions, c_lo, c_hi)
        n_valid = mask.sum()
        params = model.init(
            {"params": jax.random.fold_in(key, 0), "latent": jax.random.fold_in(key, 2)},
            x_all[0],
            c_all[0],
        )
        opt_state = optimizer.init(params)
        run_key = jax.random.fold_in(key, 1)
        pad = steps_per_epoch * B - n

        def epoch(carry, e):
            ekey = jax.random.fold_in(run_key, e)
            perm_key, step_key = jax.random.split(ekey)
            scores = jnp.where(mask, jax.random.uniform(perm_key, (n,)), 2.0)
            order = jnp.argsort(scores)
            if pad > 0:
                order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])

            def step(carry, j):
                params, opt_state = carry
                pos = j * B + jnp.arange(B)
                idx = jax.lax.dynamic_slice(order, (j * B,), (B,))
                valid = (pos < n_valid).astype(x_all.dtype)
                keys = jax.random.split(jax.random.fold_in(step_key, j), B)
                loss, grads = grad_fn(params, x_all[idx], c_all[idx], valid, keys, w_rec, w_kl)
                updates, new_opt = optimizer.update(grads, opt_state, params)
                new_params = optax.apply_updates(params, updates)
                active = valid.sum() > 0
                keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
                params = jax.tree_util.tree_map(keep, new_params, params)
                opt_state = jax.tree_util.tree_map(keep, new_opt, opt_state)
                return (params, opt_state), (loss * active, active)

            carry, (losses, active) = jax.lax.scan(step, carry, jnp.arange(steps_per_epoch))
            return carry, jnp.sum(losses) / jnp.maximum(jnp.sum(active), 1)

        (params, _), epoch_loss = jax.lax.scan(epoch, (params, opt_state), jnp.arange(epochs))
        return params, epoch_loss

    lanes = jax.vmap(train_one, in_axes=(None, None, 0, 0, 0, 0, 0, 0, 0, 0))

    def program(features, conditions, *per_lane):
        n_lanes = per_lane[0].shape[0]
        if lane_chunk <= 0 or n_lanes <= lane_chunk:
            return lanes(features, conditions, *per_lane)
        # groups of lane_chunk vmapped lanes, one group after the other
        groups = -(-n_lanes // lane_chunk)
        pad = groups * lane_chunk - n_lanes

        def split(a):
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
            return a.reshape(groups, lane_chunk, *a.shape[1:])

        out = jax.lax.map(lambda g: lanes(features, conditions, *g), tuple(map(split, per_lane)))
        merge = lambda a: a.reshape(groups * lane_chunk, *a.shape[2:])[:n_lanes]  # noqa: E731
        return jax.tree_util.tree_map(merge, out)

    return jax.jit(program)


def default_lane_chunk() -> int:
    """Lanes vmapped together: all of them on an accelerator, 8 on CPU.

    On CPU the per-step working set grows with the number of vmapped lanes
    (each sample's [H, 64, 64] attention weights); past about 8 lanes of 32
    rows it leaves the cache and a step gets 2-3x slower per lane, so larger
    lane counts run as a ``lax.map`` over groups of 8 vmapped lanes, still in
    one compiled program.
    """
    return 8 if jax.default_backend() == "cpu" else 0


# compiled executables by (static settings, argument shapes): a second run with
# the same shapes (tests, sweeps) skips the compile; compile_seconds is then ~0
_COMPILED: dict = {}


def model_kwargs(model: PulseCVAE) -> tuple:
    """Hashable constructor arguments of a :class:`PulseCVAE`."""
    return tuple(
        (f.name, getattr(model, f.name))
        for f in dataclasses.fields(model)
        if f.name not in ("parent", "name")
    )


def steps_per_epoch(train_mask: np.ndarray, batch_size: int) -> int:
    """``ceil(max rows of a lane / batch_size)``."""
    return max(1, math.ceil(int(np.asarray(train_mask).sum(axis=1).max()) / batch_size))


def train_lanes(
    model: PulseCVAE,
    inputs: LaneInputs,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    adam_eps: float = 1e-7,
    fast_compile: bool = False,
    lane_chunk: int | None = None,
) -> TrainResult:
    """Trains every lane of ``inputs`` in one compiled program.

    Args:
      model: the (unbatched) model.
      inputs: shared data and per-lane masks, normalisers and keys.
      epochs: passes over each lane's training rows.
      batch_size: B (a lane's last batch of an epoch may be short).
      learning_rate, adam_eps: Adam settings (Keras defaults: 1e-3, 1e-7).
      fast_compile: compile with XLA's backend optimisation level 0: about 3x
        quicker to compile, somewhat slower to run (for smoke runs and tests).
      lane_chunk: vmap at most this many lanes at once (0: all); None picks
        :func:`default_lane_chunk`.  Results do not depend on it.

    Returns:
      :class:`TrainResult` with lane-stacked parameters.
    """
    L, N = inputs.train_mask.shape
    F, C = inputs.features.shape[1], inputs.conditions.shape[1]
    chex.assert_shape(inputs.features, (N, F))
    chex.assert_shape(inputs.conditions, (N, C))
    chex.assert_shape([inputs.feature_lo, inputs.feature_hi], (L, F))
    chex.assert_shape([inputs.cond_lo, inputs.cond_hi], (L, C))
    chex.assert_shape([inputs.keys, inputs.w_rec, inputs.w_kl], (L,))
    if np.any(np.asarray(inputs.train_mask).sum(axis=1) == 0):
        raise ValueError("a lane has no training rows")
    spe = steps_per_epoch(inputs.train_mask, batch_size)
    chunk = default_lane_chunk() if lane_chunk is None else int(lane_chunk)
    static = (
        model_kwargs(model),
        epochs,
        batch_size,
        spe,
        float(learning_rate),
        float(adam_eps),
        chunk,
    )
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    args = (
        f32(inputs.features),
        f32(inputs.conditions),
        jnp.asarray(inputs.train_mask, bool),
        f32(inputs.feature_lo),
        f32(inputs.feature_hi),
        f32(inputs.cond_lo),
        f32(inputs.cond_hi),
        inputs.keys,
        f32(inputs.w_rec),
        f32(inputs.w_kl),
    )
    t0 = time.perf_counter()
    signature = (static, fast_compile, tuple((a.shape, str(a.dtype)) for a in args))
    compiled = _COMPILED.get(signature)
    if compiled is None:
        options = {"xla_backend_optimization_level": 0} if fast_compile else None
        compiled = _train_program(*static).lower(*args).compile(compiler_options=options)
        if len(_COMPILED) >= 8:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[signature] = compiled
    t1 = time.perf_counter()
    params, epoch_loss = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()
    return TrainResult(
        params=jax.device_get(params),
        epoch_loss=np.asarray(epoch_loss),
        steps_per_epoch=spe,
        compile_seconds=t1 - t0,
        run_seconds=t2 - t1,
    )


def lane_params(params: Any, i: int) -> Any:
    """Parameters of lane ``i`` from a lane-stacked pytree."""
    return jax.tree_util.tree_map(lambda a: a[i], params)


# ----------------------------------------------------------------- generation
@functools.lru_cache(maxsize=8)
def _apply_programs(model_kwargs: tuple):
    model = PulseCVAE(**dict(model_kwargs))

    def decode(params, z, c):
        return model.apply(params, z, c, method=PulseCVAE.decode)

    def encode(params, x, c):
        return model.apply(params, x, c, method=PulseCVAE.encode)

    decode_rows = jax.jit(jax.vmap(decode, in_axes=(None, 0, 0)))
    encode_rows = jax.jit(jax.vmap(encode, in_axes=(None, 0, 0)))
    return decode_rows, encode_rows


def _bucket(m: int) -> int:
    """Row count padded to limit recompiles: the next multiple of 256."""
    return max(256, -(-m // 256) * 256)


def decode_rows(model: PulseCVAE, params: Any, z: np.ndarray, cond_norm: np.ndarray) -> np.ndarray:
    """Decodes M rows with one lane's parameters.

    Args:
      model: the model.
      params: one lane's parameters (no lane axis).
      z: [M, latent_dim] latents.
      cond_norm: [M, C] normalised conditions.

    Returns:
      [M, F] normalised features.
    """
    m = z.shape[0]
    chex.assert_shape(cond_norm, (m, None))
    size = _bucket(m)
    zp = np.zeros((size, z.shape[1]), np.float32)
    cp = np.zeros((size, cond_norm.shape[1]), np.float32)
    zp[:m], cp[:m] = z, cond_norm
    out = _apply_programs(model_kwargs(model))[0](params, zp, cp)
    return np.asarray(out, np.float64)[:m]


def encode_rows(
    model: PulseCVAE, params: Any, x_norm: np.ndarray, cond_norm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior (mean, log-variance), each [M, latent_dim], of M normalised rows."""
    m = x_norm.shape[0]
    size = _bucket(m)
    xp = np.zeros((size, x_norm.shape[1]), np.float32)
    cp = np.zeros((size, cond_norm.shape[1]), np.float32)
    xp[:m], cp[:m] = x_norm, cond_norm
    mean, logvar = _apply_programs(model_kwargs(model))[1](params, xp, cp)
    return np.asarray(mean, np.float64)[:m], np.asarray(logvar, np.float64)[:m]
