"""CVAE training on the shared core: every (case, seed) training a member of ONE program.

The eight SOC cases of the paper differ only in which rows they train on, and
seeds differ only in their PRNG keys, so all of them are members of one
program of :mod:`slbjax.train.loop`:

* the data (``features`` [N, F], ``conditions`` [N, C], raw units) are shared;
  each member has a training mask [N] and its own min-max normalisers (arrays
  [F] and [C]), so normalisation happens inside the program;
* every epoch each member draws a random permutation of its own training rows
  (uniform scores, non-training rows pushed to the end, ``argsort``); step j
  takes positions ``j*B ... j*B+B-1`` of it; positions past the member's row
  count are masked out of the loss, exactly like the short last batch of a
  Keras ``fit`` epoch;
* all members run ``ceil(max_rows / B)`` steps per epoch; a step in which a
  member has no valid row leaves its parameters and optimiser state
  untouched, so a member trains exactly as it would alone;
* the learning rate is a per-member value in the optimizer state: other rates
  run the same compiled program.

Keys: member key ``k``; parameters from ``fold_in(k, 0)``; epoch ``e`` uses
``fold_in(fold_in(k, 1), e)``, split into a permutation key and a step key;
step ``j`` uses ``fold_in(step_key, j)`` split into one ``latent`` key per
batch row.  No key depends on the number of steps or members, which is what
makes the vmapped and the per-member trainings agree.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from slbjax.data.pulse_cases import fit_minmax  # noqa: F401 (re-exported: the fit is pure numpy)
from slbjax.models.cvae import PulseCVAE, loss_terms
from slbjax.train import loop


# ----------------------------------------------------------------- normalisers
# (fitted by :func:`slbjax.data.pulse_cases.fit_minmax`: column-wise min and max)
def _span(lo, hi):
    span = hi - lo
    # a constant column maps to 0, as scikit-learn does
    return span + (span == 0).astype(span.dtype)


def _like(a, x):
    """``a`` [..., D] with leading axes of length 1 up to the rank of ``x`` (explicit broadcasting)."""
    return a.reshape((1,) * (x.ndim - a.ndim) + a.shape)


def minmax_apply(x, lo, hi):
    """``(x - lo) / (hi - lo)`` over the last axis (works on numpy and jax arrays)."""
    return (x - _like(lo, x)) / _like(_span(lo, hi), x)


def minmax_invert(y, lo, hi):
    """Inverse of :func:`minmax_apply`."""
    return y * _like(_span(lo, hi), y) + _like(lo, y)


# ---------------------------------------------------------------- member input
@dataclasses.dataclass(frozen=True)
class MemberInputs:
    """What the vectorised trainer needs, for M members over N shared rows.

    Attributes:
      features: [N, F] raw features.
      conditions: [N, C] raw conditions (SOC fraction, SOH).
      train_mask: [M, N] bool, the rows each member trains on.
      feature_lo, feature_hi: [M, F] per-member feature normaliser.
      cond_lo, cond_hi: [M, C] per-member condition normaliser.
      keys: [M] typed PRNG keys.
      w_rec, w_kl: [M] loss weights (traced values, so they may differ per member).
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
    def num_members(self) -> int:
        return int(self.train_mask.shape[0])

    def member(self, i: int) -> MemberInputs:
        """The single-member inputs of member ``i`` (leading axis kept, length 1)."""
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


def member_key(seed: int, seed_index: int, case: int) -> jax.Array:
    """The training key of one (seed, case) member; independent of the member layout."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), seed_index), case)


# ----------------------------------------------------------------------- task
@functools.lru_cache(maxsize=8)
def task(model: PulseCVAE, num_rows: int, batch_size: int, steps: int, adam_eps: float) -> loop.Task:
    """The CVAE's training task over ``num_rows`` shared rows, ``steps`` minibatches per epoch.

    Per-member values (``hparams``): ``train_mask`` [N], ``feature_lo/hi`` [F],
    ``cond_lo/hi`` [C], ``w_rec``, ``w_kl``.
    """
    B = batch_size

    def prepare(data: loop.Data, hp) -> loop.Data:
        features, conditions = data.train
        return loop.Data((minmax_apply(features, hp["feature_lo"], hp["feature_hi"]),
                          minmax_apply(conditions, hp["cond_lo"], hp["cond_hi"])))

    def init(key, data: loop.Data):
        x, c = data.train
        return model.init({"params": jax.random.fold_in(key, 0), "latent": jax.random.fold_in(key, 2)},
                          x[0], c[0])

    def plan(rng, epoch, hp):
        mask = hp["train_mask"]
        perm_key, step_key = jax.random.split(jax.random.fold_in(rng, epoch))
        # the member's own rows in random order first, the other rows after them
        order = jnp.argsort(jnp.where(mask, jax.random.uniform(perm_key, (num_rows,)), 2.0))
        pad = steps * B - num_rows
        order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]) if pad > 0 else order[: steps * B]
        valid = jnp.arange(steps * B) < mask.sum()
        rngs = jax.vmap(lambda j: jax.random.fold_in(step_key, j))(jnp.arange(steps))
        return rng, order.reshape(steps, B), valid.reshape(steps, B), rngs

    def loss(params, batch, mask, rng, hp):
        x, c = batch

        def one(xi, ci, ki):
            x_hat, mean, logvar = model.apply(params, xi, ci, rngs={"latent": ki})
            return loss_terms(xi, x_hat, mean, logvar)

        rec, kl = jax.vmap(one)(x, c, jax.random.split(rng, B))
        per_row = hp["w_rec"] * rec + hp["w_kl"] * kl
        return jnp.sum(mask / jnp.maximum(mask.sum(), 1.0) * per_row), {}

    # only the learning rate is a per-member value: Adam's other constants stay Python floats
    return loop.Task(init=init, loss=loss, plan=plan, prepare=prepare,
                     optimizer=lambda learning_rate: optax.adam(learning_rate, eps=adam_eps))


def default_member_group() -> int:
    """Members vmapped together: all of them on an accelerator, 8 on CPU.

    On CPU the per-step working set grows with the number of vmapped members
    (each sample's [H, 64, 64] attention weights); past about 8 members of 32
    rows it leaves the cache and a step gets 2-3x slower per member, so larger
    member counts run as a ``lax.map`` over groups of 8 vmapped members, still
    in one compiled program.
    """
    return 8 if jax.default_backend() == "cpu" else 0


def steps_per_epoch(train_mask: np.ndarray, batch_size: int) -> int:
    """``ceil(max rows of a member / batch_size)``."""
    return max(1, math.ceil(int(np.asarray(train_mask).sum(axis=1).max()) / batch_size))


def train_members(
    model: PulseCVAE,
    inputs: MemberInputs,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float | np.ndarray,
    adam_eps: float = 1e-7,
    fast_compile: bool = False,
    member_group: int | None = None,
) -> list[loop.TrainResult]:
    """Trains every member of ``inputs`` in one compiled program (:func:`slbjax.train.loop.fit`).

    Args:
      model: the (unbatched) model.
      inputs: shared data and per-member masks, normalisers and keys.
      epochs: passes over each member's training rows.
      batch_size: B (a member's last batch of an epoch may be short).
      learning_rate: Adam's rate, one value or one per member (a traced value:
        other rates reuse the compiled program); Keras default 1e-3.
      adam_eps: Adam's epsilon (Keras default 1e-7).
      fast_compile: compile with XLA's backend optimisation level 0: about 3x
        quicker to compile, somewhat slower to run (for smoke runs and tests).
      member_group: vmap at most this many members at once (0: all); None picks
        :func:`default_member_group`.  Results do not depend on it.

    Returns:
      One :class:`~slbjax.train.loop.TrainResult` per member (final parameters).
    """
    M, N = inputs.train_mask.shape
    F, C = inputs.features.shape[1], inputs.conditions.shape[1]
    chex.assert_shape(inputs.features, (N, F))
    chex.assert_shape(inputs.conditions, (N, C))
    chex.assert_shape([inputs.feature_lo, inputs.feature_hi], (M, F))
    chex.assert_shape([inputs.cond_lo, inputs.cond_hi], (M, C))
    chex.assert_shape([inputs.keys, inputs.w_rec, inputs.w_kl], (M,))
    if np.any(np.asarray(inputs.train_mask).sum(axis=1) == 0):
        raise ValueError("a member has no training rows")
    spe = steps_per_epoch(inputs.train_mask, batch_size)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    hp = {"train_mask": np.asarray(inputs.train_mask, bool),
          "feature_lo": f32(inputs.feature_lo), "feature_hi": f32(inputs.feature_hi),
          "cond_lo": f32(inputs.cond_lo), "cond_hi": f32(inputs.cond_hi),
          "w_rec": f32(inputs.w_rec), "w_kl": f32(inputs.w_kl)}
    members = loop.Members(
        init_keys=inputs.keys,
        rngs=jax.vmap(lambda k: jax.random.fold_in(k, 1))(inputs.keys),
        learning_rate=np.broadcast_to(f32(learning_rate), (M,)),
        hparams=hp,
    )
    return loop.fit(
        task(model, N, batch_size, spe, float(adam_eps)),
        loop.Data((f32(inputs.features), f32(inputs.conditions))),
        members,
        epochs=epochs,
        chunk=epochs,
        member_group=default_member_group() if member_group is None else int(member_group),
        fast_compile=fast_compile,
        log=lambda s: None,
    )


# ----------------------------------------------------------------- generation
@functools.lru_cache(maxsize=8)
def _apply_programs(model: PulseCVAE):

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
    """Decodes M rows with one member's parameters.

    Args:
      model: the model.
      params: one member's parameters (no member axis).
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
    out = _apply_programs(model)[0](params, zp, cp)
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
    mean, logvar = _apply_programs(model)[1](params, xp, cp)
    return np.asarray(mean, np.float64)[:m], np.asarray(logvar, np.float64)[:m]
