"""Training iMOE: pure steps, whole epochs inside ``jit``, early stopping.

One call of the jitted ``run_chunk`` performs ``chunk`` epochs: each epoch
shuffles the training windows, scans the update step over the minibatches
(the last one padded and masked, so every window counts once per epoch as
with a PyTorch loader without ``drop_last``), evaluates the validation
trajectory MSE without router noise, keeps the best parameters so far and
counts epochs since the last improvement.  Once ``patience`` epochs pass
without improvement the member stops: later epochs leave its state as it is.
The host loop only prints progress and stops when every member has stopped.

Everything is a pure function of (carry, key): the carry can be stacked and
vmapped for ensembles.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from slbjax.errors import ConfigError
from slbjax.models.apply import batched_apply
from slbjax.models.imoe import IMOE

DATA_AXIS = "data"


def data_mesh(batch_size: int, devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) for data-parallel training.

    Raises:
      ConfigError: if the batch does not divide evenly over the devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    if batch_size % len(devices):
        raise ConfigError(
            f"train.batch_size={batch_size} is not divisible by the {len(devices)} devices of the "
            f"data-parallel mesh; use a multiple of {len(devices)}"
        )
    return Mesh(np.asarray(devices), (DATA_AXIS,))


class Batch(NamedTuple):
    """Model inputs and targets, leading axis = windows."""

    qv: Any  # [M, Q]
    features: Any  # [M, F]
    load: Any  # [M, L, 3]
    target: Any  # [M, L]

    @property
    def size(self) -> int:
        return int(self.qv.shape[0])

    def take(self, idx) -> Batch:
        return Batch(*(x[idx] for x in self))


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


def stack_members(params_list: Sequence[Any]) -> Any:
    """Stacks N parameter pytrees on a new leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *params_list)


def predict_members(
    model: IMOE, stacked_params, data: Batch, batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions [N, M, L] and router weights [N, M, E] of N stacked members."""
    fn = jax.jit(jax.vmap(lambda p, q, f, u: batched_apply(model, p, q, f, u), in_axes=(0, None, None, None)))
    preds, gates = [], []
    for start in range(0, data.size, batch_size):
        part = data.take(slice(start, start + batch_size))
        y, w = fn(stacked_params, part.qv, part.features, part.load)
        preds.append(np.asarray(y))
        gates.append(np.asarray(w))
    return np.concatenate(preds, 1), np.concatenate(gates, 1)


def init_params(model: IMOE, key, sample: Batch):
    return model.init({"params": key}, sample.qv[0], sample.features[0], sample.load[0])


class Carry(NamedTuple):
    params: Any
    opt_state: Any  # optax.inject_hyperparams state: holds this member's learning rate
    mse_weight: jax.Array
    router_weight: jax.Array
    best_params: Any
    best_val: jax.Array
    best_epoch: jax.Array
    since_best: jax.Array
    epoch: jax.Array
    stopped: jax.Array


def make_optimizer(learning_rate: float = 1e-4) -> optax.GradientTransformation:
    """Adam whose learning rate lives in its state, so members can differ under vmap."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def init_carry(params, tx: optax.GradientTransformation, learning_rate, mse_weight, router_weight) -> Carry:
    """Initial training state of one member (values may be traced under vmap)."""
    opt_state = tx.init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    z = jnp.zeros((), jnp.int32)
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return Carry(params, opt_state, f32(mse_weight), f32(router_weight), params,
                 f32(jnp.inf), z - 1, z, z, jnp.zeros((), bool))


def make_chunk_fn(
    model: IMOE,
    tx: optax.GradientTransformation,
    *,
    num_train: int,
    batch_size: int,
    patience: int,
    weights: LossWeights,
    chunk: int,
    mesh: Mesh | None = None,
) -> Callable:
    """Builds ``run_chunk(carry, key, train, val) -> (carry, (train_loss, train_mse, val_mse))``.

    Each log is [chunk]; epochs after a member stopped are NaN.

    ``key`` is the member's base key; epoch e uses ``fold_in(key, e)``.
    With a ``mesh`` (axis ``"data"``), every minibatch is sharded over its
    devices while parameters and optimizer state stay replicated: XLA then
    runs each device's share of the batch and all-reduces the gradients.
    """
    steps = math.ceil(num_train / batch_size)
    padded = steps * batch_size

    def shard(x):
        if mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS)))

    def update(carry_pv, xs, train: Batch, member_weights: LossWeights):
        params, opt_state = carry_pv
        idx, mask, rng = xs
        batch = Batch(*(shard(x) for x in train.take(idx)))
        mask = shard(mask)
        (loss, (mse, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, model, batch, mask, rng, member_weights
        )
        upd, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, upd), opt_state), (loss, mse)

    def one_epoch(carry: Carry, key, train: Batch, val: Batch):
        ekey = jax.random.fold_in(key, carry.epoch)
        perm_key, step_key = jax.random.split(ekey)
        perm = jax.random.permutation(perm_key, num_train)
        perm = jnp.concatenate([perm, jnp.zeros(padded - num_train, perm.dtype)])
        mask = (jnp.arange(padded) < num_train).astype(jnp.float32)
        xs = (
            perm.reshape(steps, batch_size),
            mask.reshape(steps, batch_size),
            jax.random.split(step_key, steps),
        )
        member_weights = LossWeights(carry.mse_weight, carry.router_weight, weights.eps)
        (params, opt_state), (losses, mses) = jax.lax.scan(
            lambda c, x: update(c, x, train, member_weights), (carry.params, carry.opt_state), xs
        )
        per_step = mask.reshape(steps, batch_size).sum(1)
        train_loss = (losses * per_step).sum() / num_train
        train_mse = (mses * per_step).sum() / num_train
        val_mse = eval_mse(params, model, val)
        improved = val_mse < carry.best_val
        since_best = jnp.where(improved, 0, carry.since_best + 1)
        new = Carry(
            params=params,
            opt_state=opt_state,
            mse_weight=carry.mse_weight,
            router_weight=carry.router_weight,
            best_params=jax.tree_util.tree_map(
                lambda a, b: jnp.where(improved, a, b), params, carry.best_params
            ),
            best_val=jnp.where(improved, val_mse, carry.best_val),
            best_epoch=jnp.where(improved, carry.epoch, carry.best_epoch),
            since_best=since_best,
            epoch=carry.epoch + 1,
            stopped=since_best >= patience,
        )
        # A stopped member keeps its state: the epoch is computed but discarded.
        out = jax.tree_util.tree_map(lambda a, b: jnp.where(carry.stopped, b, a), new, carry)
        nan = jnp.asarray(jnp.nan, jnp.float32)
        logs = (train_loss, train_mse, val_mse)
        return out, tuple(jnp.where(carry.stopped, nan, x) for x in logs)

    def run_chunk(carry: Carry, key, train: Batch, val: Batch):
        return jax.lax.scan(lambda c, _: one_epoch(c, key, train, val), carry, None, length=chunk)

    return run_chunk


@dataclasses.dataclass
class TrainResult:
    """Outcome of one member's training."""

    params: Any  # best parameters (lowest validation MSE)
    best_val_mse: float
    best_epoch: int
    epochs_run: int
    seconds: float  # wall time of the whole (ensemble) training
    seconds_per_epoch: float  # after compilation, for the whole ensemble
    history: dict[str, list[float]]


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
) -> list[TrainResult]:
    """Trains one model per seed in ONE jit-compiled program.

    Parameters, optimizer states and keys are stacked on a leading member
    axis and the epoch function is vmapped over it; each member stops early
    on its own, and once a quarter of the lanes has stopped the program goes
    on with the active members only (single-device runs; a stopped member
    would otherwise be computed and discarded until the last one stops).  Member i gets exactly the numbers a single training with
    ``seeds[i]`` gets.  ``learning_rate`` and ``weights`` may be one value or
    one per member (they are traced values, so any mix shares one program;
    ``eps`` must be the same for all).  With a ``mesh`` (see :func:`data_mesh`) each minibatch
    is sharded over the mesh's devices (data parallel).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    n = len(seeds)
    lrs = [learning_rate] * n if np.isscalar(learning_rate) else list(learning_rate)
    ws = [weights] * n if isinstance(weights, LossWeights) else list(weights)
    if len(lrs) != n or len(ws) != n or len({w.eps for w in ws}) != 1:
        raise ValueError("learning_rate/weights: one value, or one per seed with a common eps")
    weights = ws[0]
    keys = jax.vmap(lambda s: jnp.stack(jax.random.split(jax.random.key(s))))(jnp.asarray(seeds))
    init_keys, train_keys = keys[:, 0], keys[:, 1]
    tx = make_optimizer()
    carry = jax.vmap(lambda k, lr, a, b: init_carry(init_params(model, k, train), tx, lr, a, b))(
        init_keys, jnp.asarray(lrs, jnp.float32), jnp.asarray([w.mse for w in ws], jnp.float32),
        jnp.asarray([w.router for w in ws], jnp.float32),
    )
    chunk = max(1, min(chunk, epochs))
    one = make_chunk_fn(
        model, tx, num_train=train.size, batch_size=batch_size, patience=patience,
        weights=weights, chunk=chunk, mesh=mesh,
    )
    run_chunk = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))
    if mesh is not None:  # data and state replicated on every device of the mesh
        replicated = NamedSharding(mesh, P())

        def put(tree):
            if jax.process_count() == 1:
                return jax.device_put(tree, replicated)
            # several hosts: every process holds the same (small) arrays and
            # contributes them as its part of one global, replicated array
            return jax.tree_util.tree_map(
                lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)), tree
            )

        train_d, val_d = put(Batch(*train)), put(Batch(*val))
        carry = put(carry)
        train_keys = jax.random.wrap_key_data(put(jax.random.key_data(train_keys)))
    else:
        train_d = Batch(*map(jnp.asarray, train))
        val_d = Batch(*map(jnp.asarray, val))
    hist = [{"train_loss": [], "train_mse": [], "val_mse": []} for _ in range(n)]
    lanes = np.arange(n)  # the member each lane of the program trains
    final: dict[int, tuple] = {}  # member -> (best params, best val, best epoch, epochs run)

    def settle(which: np.ndarray) -> None:
        """Copies the final state of the members in lanes ``which`` to the host."""
        host = jax.device_get((carry.best_params, carry.best_val, carry.best_epoch, carry.epoch))
        for lane in which:
            final[int(lanes[lane])] = jax.tree_util.tree_map(lambda x, lane=lane: x[lane], host)

    t0 = time.perf_counter()
    t_first = None
    done = 0
    while done < epochs:
        carry, logs = run_chunk(carry, train_keys, train_d, val_d)
        tl, tm, vl = (np.asarray(x) for x in logs)  # [lanes, chunk]
        if t_first is None:
            t_first = time.perf_counter()  # the first chunk includes compilation
            first_chunk_epochs = chunk
        done += chunk
        for lane, i in enumerate(lanes):
            keep = ~np.isnan(vl[lane])
            for name, x in zip(hist[i], (tl[lane], tm[lane], vl[lane]), strict=True):
                hist[i][name].extend(x[keep].tolist())
        stopped = np.asarray(carry.stopped)
        best = np.concatenate([np.asarray(carry.best_val), [f[1] for f in final.values()]])
        if n == 1 and not np.isnan(vl[0]).all():
            k = ~np.isnan(vl[0])
            log(
                f"epoch {int(carry.epoch[0]):5d}/{epochs}  loss {tl[0][k][-1]:.3e}  train mse "
                f"{tm[0][k][-1]:.3e}  val mse {vl[0][k][-1]:.3e}  best {best[0]:.3e} "
                f"@ {int(carry.best_epoch[0]) + 1}"
            )
        elif n > 1:
            log(f"epoch {done:5d}/{epochs}  members training {int((~stopped).sum())}/{n}  "
                f"best val mse {best.min():.3e} .. {best.max():.3e}")
        if stopped.all():
            log(f"early stop: no improvement for {patience} epochs"
                + (" in every member" if n > 1 else ""))
            break
        # Stopped members would still be computed (and discarded) every epoch: once a
        # quarter of the lanes (at least one) has stopped, the program continues with the
        # active members only (one more compilation for the narrower program).
        if mesh is None and stopped.sum() >= max(1, len(lanes) // 4):
            settle(np.flatnonzero(stopped))
            active = np.flatnonzero(~stopped)
            carry = jax.tree_util.tree_map(lambda x, active=active: x[active], carry)
            train_keys, lanes = train_keys[active], lanes[active]
            log(f"epoch {done:5d}/{epochs}  continuing with the {len(lanes)} active member(s) only")
    settle(np.arange(len(lanes)))
    seconds = time.perf_counter() - t0
    steady_epochs = done - first_chunk_epochs  # epochs computed after compilation
    per_epoch = (time.perf_counter() - t_first) / steady_epochs if steady_epochs > 0 else seconds / done
    return [
        TrainResult(
            params=final[i][0],
            best_val_mse=float(final[i][1]),
            best_epoch=int(final[i][2]) + 1,
            epochs_run=int(final[i][3]),
            seconds=seconds,
            seconds_per_epoch=per_epoch,
            history=hist[i],
        )
        for i in range(n)
    ]


def fit(model: IMOE, train: Batch, val: Batch, *, seed: int, **kwargs) -> TrainResult:
    """Trains one model (an ensemble of one); see :func:`fit_members`."""
    return fit_members(model, train, val, seeds=[seed], **kwargs)[0]
