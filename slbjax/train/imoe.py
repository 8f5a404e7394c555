"""Training the trajectory models (iMOE and the baselines) on the shared core.

What this family supplies to :mod:`slbjax.train.loop`: the loss (0.75 x
trajectory MSE + 0.25 x CV^2 of the per-expert gate sums, on a masked
minibatch), the parameter init, the epoch's minibatches (a fresh permutation
of the training windows from ``fold_in(key, epoch)``, the last minibatch
padded and masked, so every window counts once per epoch as with a PyTorch
loader without ``drop_last``) and the validation trajectory MSE without
router noise (or, with ``select_on="loss"``, the weighted loss on validation
minibatches as the published code computes it), which chooses the best
parameters and stops a member after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from slbjax.data.windows import Batch
from slbjax.models.apply import batched_apply
from slbjax.models.imoe import IMOE
from slbjax.train import loop
from slbjax.train.loop import TrainResult, data_mesh, stack_members  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    mse: float = 0.75
    router: float = 0.25
    eps: float = 1e-10


def cv_squared(x: jax.Array, eps: float) -> jax.Array:
    """Squared coefficient of variation (unbiased variance / mean^2) of [E]."""
    if x.shape[0] < 2:
        return jnp.zeros((), x.dtype)
    return jnp.var(x, ddof=1) / (jnp.mean(x) ** 2 + eps)


def loss_fn(params, model: IMOE, batch: Batch, mask, rng, weights: LossWeights):
    """Training loss of one (masked) minibatch.

    Returns:
      (total, (mse, router_loss)); mse is the mean over valid windows and cycles,
      router_loss the squared coefficient of variation of per-expert gate sums.
    """
    pred, gates = batched_apply(model, params, batch.qv, batch.features, batch.load, train=True, rng=rng)
    n = jnp.maximum(mask.sum(), 1.0)
    mse = (((pred - batch.target) ** 2).mean(-1) * mask).sum() / n
    router = cv_squared((gates * mask[:, None]).sum(0), weights.eps)
    return weights.mse * mse + weights.router * router, (mse, router)


def eval_mse(params, model: IMOE, data: Batch, batch_size: int = 4096) -> jax.Array:
    """Trajectory MSE over all windows of ``data`` (no router noise)."""
    total = jnp.zeros(())
    for start in range(0, data.size, batch_size):
        part = data.take(slice(start, start + batch_size))
        pred, _ = batched_apply(model, params, part.qv, part.features, part.load)
        total = total + ((pred - part.target) ** 2).mean(-1).sum()
    return total / data.size


def eval_loss(params, model: IMOE, data: Batch, batch_size: int, weights: LossWeights) -> jax.Array:
    """The training loss on ``data`` as the published code validates: the mean over
    minibatches of ``batch_size`` in order (the last one shorter, weighted as the
    others) of the weighted trajectory MSE + CV^2 of the minibatch's gate sums,
    without router noise."""
    total = jnp.zeros(())
    starts = range(0, data.size, batch_size)
    for start in starts:
        part = data.take(slice(start, start + batch_size))
        pred, gates = batched_apply(model, params, part.qv, part.features, part.load)
        mse = ((pred - part.target) ** 2).mean()
        total = total + weights.mse * mse + weights.router * cv_squared(gates.sum(0), weights.eps)
    return total / len(starts)


def predict(model: IMOE, params, data: Batch, batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic predictions [M, L] and router weights [M, E] as numpy."""
    fn = jax.jit(lambda p, q, f, u: batched_apply(model, p, q, f, u))
    preds, gates = [], []
    for start in range(0, data.size, batch_size):
        part = data.take(slice(start, start + batch_size))
        y, w = fn(params, part.qv, part.features, part.load)
        preds.append(np.asarray(y))
        gates.append(np.asarray(w))
    return np.concatenate(preds), np.concatenate(gates)


@functools.lru_cache(maxsize=16)
def _members_apply(model: IMOE) -> Callable:
    return jax.jit(jax.vmap(lambda p, q, f, u: batched_apply(model, p, q, f, u), in_axes=(0, None, None, None)))


def predict_members(
    model: IMOE, stacked_params, data: Batch, batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions [N, M, L] and router weights [N, M, E] of N stacked members (one compiled
    program per model and shape, kept for the runs of a group)."""
    fn = _members_apply(model)
    preds, gates = [], []
    for start in range(0, data.size, batch_size):
        part = data.take(slice(start, start + batch_size))
        y, w = fn(stacked_params, part.qv, part.features, part.load)
        preds.append(np.asarray(y))
        gates.append(np.asarray(w))
    return np.concatenate(preds, 1), np.concatenate(gates, 1)


def init_params(model: IMOE, key, sample: Batch):
    return model.init({"params": key}, sample.qv[0], sample.features[0], sample.load[0])


@functools.lru_cache(maxsize=16)
def task(model: IMOE, num_train: int, batch_size: int, eps: float = 1e-10,
         select_on: str = "mse") -> loop.Task:
    """The training task of ``model`` on ``num_train`` windows in minibatches of ``batch_size``.

    Per-member values (``hparams``): ``{"mse": weight, "router": weight}``.
    ``select_on``: the validation score that picks the best epoch and stops a
    member: ``"mse"``, the trajectory MSE over all validation windows, or
    ``"loss"``, the member's weighted training loss on validation minibatches
    (:func:`eval_loss`, the published code's rule).
    """
    if select_on not in ("mse", "loss"):
        raise ValueError(f"select_on must be 'mse' or 'loss', got {select_on!r}")
    steps, cut = loop.shuffled_batches(num_train, batch_size)

    def loss(params, batch: Batch, mask, rng, hp):
        total, (mse, _) = loss_fn(params, model, batch, mask, rng, LossWeights(hp["mse"], hp["router"], eps))
        return total, {"mse": mse}

    def plan(rng, epoch, hp):
        perm_key, step_key = jax.random.split(jax.random.fold_in(rng, epoch))
        idx, mask = cut(jax.random.permutation(perm_key, num_train))
        return rng, idx, mask, jax.random.split(step_key, steps)

    return loop.Task(
        init=lambda key, data: init_params(model, key, data.train),
        loss=loss,
        plan=plan,
        optimizer=optax.adam,
        validate=(lambda params, data, hp: eval_mse(params, model, data.val)) if select_on == "mse"
        else (lambda params, data, hp: eval_loss(params, model, data.val, batch_size,
                                                 LossWeights(hp["mse"], hp["router"], eps))),
        val_name=select_on,
    )


def members(seeds: Sequence[int], learning_rate: float | Sequence[float],
            weights: LossWeights | Sequence[LossWeights]) -> loop.Members:
    """Members for :func:`task`: seed s gives (init, training) keys ``split(key(s))``."""
    n = len(seeds)
    lrs = [learning_rate] * n if np.isscalar(learning_rate) else list(learning_rate)
    ws = [weights] * n if isinstance(weights, LossWeights) else list(weights)
    if len(lrs) != n or len(ws) != n or len({w.eps for w in ws}) != 1:
        raise ValueError("learning_rate/weights: one value, or one per seed with a common eps")
    keys = jax.vmap(lambda s: jnp.stack(jax.random.split(jax.random.key(s))))(jnp.asarray(seeds))
    hp = {"mse": np.asarray([w.mse for w in ws], np.float32),
          "router": np.asarray([w.router for w in ws], np.float32)}
    return loop.Members(keys[:, 0], keys[:, 1], np.asarray(lrs, np.float32), hp)


def fit_members(
    model: IMOE,
    train: Batch,
    val: Batch,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    learning_rate: float | Sequence[float],
    patience: int,
    weights: LossWeights | Sequence[LossWeights] = LossWeights(),
    chunk: int = 10,
    mesh: Mesh | None = None,
    log: Callable[[str], None] | None = None,
    select_on: str = "mse",
    plateau: loop.Plateau | None = None,
    member_group: int = 0,
) -> list[TrainResult]:
    """Trains one model per seed in ONE compiled program (:func:`slbjax.train.loop.fit`).

    ``learning_rate`` and ``weights`` may be one value or one per member
    (``eps`` must be the same for all).  Member i gets exactly the numbers a
    single training with ``seeds[i]`` gets.
    """
    ws = [weights] * len(seeds) if isinstance(weights, LossWeights) else list(weights)
    t = task(model, train.size, batch_size, ws[0].eps, select_on)
    return loop.fit(t, loop.Data(train, val), members(seeds, learning_rate, ws), epochs=epochs,
                    patience=patience, plateau=plateau, chunk=chunk, mesh=mesh,
                    member_group=member_group, log=log)


def fit(model: IMOE, train: Batch, val: Batch, *, seed: int, **kwargs) -> TrainResult:
    """Trains one model (an ensemble of one); see :func:`fit_members`."""
    return fit_members(model, train, val, seeds=[seed], **kwargs)[0]
