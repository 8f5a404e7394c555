"""One training core for every model family: members vmapped, whole epochs inside ``jit``.

A family (iMOE and its baselines, the CVAE, the history MLP, ...) describes
itself with a :class:`Task`: how to initialise one member's parameters, its
loss on one masked minibatch, how an epoch's minibatches are drawn, the
optimizer, and optionally a validation score.  :func:`fit` does the rest, the
same way for all of them:

* **members** (seeds, and per-member values: learning rate, loss weights,
  row masks, normalisers) are stacked on a leading axis and the epoch
  function is ``jax.vmap``-ed over them.  The learning rate lives in the
  optimizer state (``optax.inject_hyperparams``, built inside the vmapped
  init), so members with different values share one compiled program, and a
  second call with other values reuses it (:func:`compilations` counts);
* one call of the compiled program runs ``chunk`` epochs: a ``lax.scan`` over
  epochs around a ``lax.scan`` over minibatches; the training state is
  donated to it;
* a minibatch is a fixed number of row indices with a mask; a step whose
  mask is empty changes nothing (parameters and optimizer state), so a member
  with fewer rows than the others trains exactly as it would alone;
* with a validation score the best parameters are kept (strictly lower
  score); with ``patience`` a member stops once that many epochs pass without
  improvement, and its state no longer changes; with ``plateau`` the learning
  rate is multiplied by ``factor`` after ``patience`` epochs without a
  relative improvement of ``threshold`` (PyTorch's ``ReduceLROnPlateau``);
* once a quarter of the members (at least one) has stopped, the program goes
  on with the active members only (one more compilation each time it
  narrows; single-device runs);
* with a ``mesh`` (axis ``"data"``) every minibatch is sharded over its
  devices while parameters and optimizer state stay replicated: XLA runs each
  device's share of the batch and all-reduces the gradients;
* ``member_group`` g > 0 vmaps at most g members at once (a ``lax.map`` over
  groups of g, still one program): on CPU a wide vmap can leave the cache.

Member i gets the numbers a training of member i alone gets, whatever the
other members, the chunking or the grouping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from slbjax.errors import ConfigError, RunDirError
from slbjax.train import resume

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


class Data(NamedTuple):
    """What the members train on.

    Attributes:
      train: pytree whose leaves have a leading row axis; minibatches are rows of it.
      val: whatever the task's ``validate`` reads (None without validation).
    """

    train: Any
    val: Any = None


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """What a model family supplies to :func:`fit` (all functions of ONE member).

    Attributes:
      init: ``(key, data) -> params``.
      loss: ``(params, batch, mask [B], rng, hparams) -> (loss, {name: scalar})``;
        the named scalars are logged per epoch as ``train_<name>``.
      plan: ``(rng, epoch, hparams) -> (rng, idx [S, B], mask [S, B], step_rngs [S])``,
        the epoch's minibatches (row indices into ``data.train``) and the rng
        the next epoch starts from.
      optimizer: ``learning_rate -> optax.GradientTransformation``, wrapped in
        ``optax.inject_hyperparams``: every numeric argument of its signature
        (for ``optax.adam`` also b1, b2, eps) becomes a float32 value in the
        optimizer state, so at least the learning rate is a per-member value.
      prepare: ``(data, hparams) -> data``, the member's view of the shared data
        (e.g. its own normalisation), computed once per program call; None: as given.
      validate: ``(params, data, hparams) -> scalar``, lower is better; None: no
        selection (the final parameters are returned).
      val_name: name of the validation score in the history (``val_<name>``).
    """

    init: Callable
    loss: Callable
    plan: Callable
    optimizer: Callable[..., optax.GradientTransformation]
    prepare: Callable | None = None
    validate: Callable | None = None
    val_name: str = "loss"


@dataclasses.dataclass(frozen=True)
class Members:
    """N members, every field with a leading member axis.

    Attributes:
      init_keys: [N] typed PRNG keys of the parameter init.
      rngs: [N] typed PRNG keys: the rng each member's first epoch gets.
      learning_rate: [N].
      hparams: pytree of per-member values the task's functions read.
    """

    init_keys: jax.Array
    rngs: jax.Array
    learning_rate: Any
    hparams: Any = ()

    def __len__(self) -> int:
        return int(self.init_keys.shape[0])


@dataclasses.dataclass(frozen=True)
class Plateau:
    """Multiply the learning rate by ``factor`` once the validation score has not
    improved by ``threshold`` (relative) for more than ``patience`` epochs."""

    patience: int
    factor: float = 0.5
    threshold: float = 1e-4


@dataclasses.dataclass
class TrainResult:
    """Outcome of one member's training.

    Attributes:
      params: best parameters (lowest validation score), or the final ones
        when the task has no validation.
      best_val: the best validation score (inf without validation).
      best_epoch: 1-based epoch of the best parameters (0 without validation).
      epochs_run: epochs this member trained before it stopped.
      learning_rate: the member's learning rate at the end (after plateau cuts).
      seconds: wall time of the whole program (all members), compilation included.
      compile_seconds: of that, tracing and compiling.
      seconds_per_epoch: after compilation, for the whole program.
      history: per-epoch logs: ``train_loss``, ``train_<name>``, ``val_<name>``.
    """

    params: Any
    best_val: float
    best_epoch: int
    epochs_run: int
    learning_rate: float
    seconds: float
    compile_seconds: float
    seconds_per_epoch: float
    history: dict[str, list[float]]


class State(NamedTuple):
    """One member's training state (vmapped: every leaf gets a member axis)."""

    params: Any
    opt_state: Any  # optax.inject_hyperparams state: holds this member's learning rate
    rng: jax.Array
    best_params: Any  # None without validation
    best_val: jax.Array
    best_epoch: jax.Array
    since_best: jax.Array
    plateau_best: jax.Array
    plateau_bad: jax.Array
    epoch: jax.Array
    stopped: jax.Array


def _tx(task: Task, learning_rate) -> optax.GradientTransformation:
    return optax.inject_hyperparams(task.optimizer)(learning_rate=learning_rate)


def _init_state(task: Task, data: Data, key, rng, learning_rate, hparams) -> State:
    if task.prepare is not None:
        data = task.prepare(data, hparams)
    params = task.init(key, data)
    opt_state = _tx(task, jnp.asarray(learning_rate, jnp.float32)).init(params)
    z = jnp.zeros((), jnp.int32)
    inf = jnp.asarray(jnp.inf, jnp.float32)
    best = params if task.validate is not None else None
    return State(params, opt_state, rng, best, inf, z - 1, z, inf, z, z, jnp.zeros((), bool))


def _where_tree(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _chunk_fn(task: Task, *, epochs: int, chunk: int, patience: int | None,
              plateau: Plateau | None, mesh: Mesh | None) -> Callable:
    """``run_chunk(state, data, hparams) -> (state, logs)`` for one member, ``chunk`` epochs
    (none past ``epochs``)."""

    def shard(x):
        if mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS)))

    def update(carry, xs, train, hparams):
        params, opt_state = carry
        idx, mask, rng = xs
        batch = jax.tree_util.tree_map(lambda a: shard(a[idx]), train)
        mask = shard(mask)
        (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(
            params, batch, mask, rng, hparams
        )
        tx = _tx(task, opt_state.hyperparams["learning_rate"])
        # optax's bias correction raises a float decay to an int32 step count: it needs
        # standard promotion, while the rest of a program is also valid under strict rules
        with jax.numpy_dtype_promotion("standard"):
            upd, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, upd)
        active = mask.sum() > 0  # an empty step leaves everything as it was
        carry = (_where_tree(active, new_params, params), _where_tree(active, new_opt, opt_state))
        return carry, (loss, aux, mask.sum())

    def one_epoch(state: State, data: Data, hparams):
        rng, idx, mask, step_rngs = task.plan(state.rng, state.epoch, hparams)
        (params, opt_state), (losses, aux, counts) = jax.lax.scan(
            lambda c, x: update(c, x, data.train, hparams),
            (state.params, state.opt_state),
            (idx, mask.astype(jnp.float32), step_rngs),
        )
        rows = jnp.maximum(counts.sum(), 1.0)
        logs = {"train_loss": (losses * counts).sum() / rows}
        logs.update({f"train_{k}": (v * counts).sum() / rows for k, v in aux.items()})
        new = state._replace(params=params, opt_state=opt_state, rng=rng, epoch=state.epoch + 1)
        if task.validate is not None:
            val = task.validate(params, data, hparams)
            logs[f"val_{task.val_name}"] = val
            improved = val < state.best_val
            since = jnp.where(improved, 0, state.since_best + 1)
            new = new._replace(
                best_params=_where_tree(improved, params, state.best_params),
                best_val=jnp.where(improved, val, state.best_val),
                best_epoch=jnp.where(improved, state.epoch, state.best_epoch),
                since_best=since,
                stopped=since >= patience if patience is not None else state.stopped,
            )
            if plateau is not None:
                better = val < state.plateau_best * (1 - plateau.threshold)
                bad = jnp.where(better, 0, state.plateau_bad + 1)
                cut = bad > plateau.patience
                lr = opt_state.hyperparams["learning_rate"]
                hyper = {**opt_state.hyperparams,
                         "learning_rate": jnp.where(cut, lr * plateau.factor, lr)}
                new = new._replace(
                    opt_state=opt_state._replace(hyperparams=hyper),
                    plateau_best=jnp.where(better, val, state.plateau_best),
                    plateau_bad=jnp.where(cut, 0, bad),
                )
        # the last epoch: later epochs of the chunk are computed but discarded, too
        new = new._replace(stopped=new.stopped | (new.epoch >= epochs))
        # A stopped member keeps its state: the epoch is computed but discarded.
        out = _where_tree(state.stopped, state, new)
        nan = jnp.asarray(jnp.nan, jnp.float32)
        return out, {k: jnp.where(state.stopped, nan, v) for k, v in logs.items()}

    def run_chunk(state: State, data: Data, hparams):
        if task.prepare is not None:
            data = task.prepare(data, hparams)
        return jax.lax.scan(lambda s, _: one_epoch(s, data, hparams), state, None, length=chunk)

    return run_chunk


def _grouped(fn: Callable, group: int) -> Callable:
    """``fn`` vmapped over members, at most ``group`` at a time (0: all at once)."""
    vmapped = jax.vmap(fn, in_axes=(0, None, 0))

    def run(state, data, hparams):
        n = jax.tree_util.tree_leaves(state)[0].shape[0]
        if group <= 0 or n <= group:
            return vmapped(state, data, hparams)
        groups = -(-n // group)
        pad = groups * group - n

        def split(a):
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
            return a.reshape(groups, group, *a.shape[1:])

        def merge(a):
            return a.reshape(groups * group, *a.shape[2:])[:n]

        tree_split = lambda t: jax.tree_util.tree_map(split, t)  # noqa: E731
        out = jax.lax.map(lambda g: vmapped(g[0], data, g[1]), (tree_split(state), tree_split(hparams)))
        return jax.tree_util.tree_map(merge, out)

    return run


# compiled programs by (task, settings, argument shapes): a second fit of the same
# task and shapes (other seeds or learning rates) runs without compiling
_COMPILED: dict = {}
_COMPILE_COUNT = [0]


def compilations() -> int:
    """How many training programs this process has compiled so far."""
    return _COMPILE_COUNT[0]


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves))


def program(task: Task, args: tuple, *, epochs: int, chunk: int, patience: int | None = None,
            plateau: Plateau | None = None, mesh: Mesh | None = None, member_group: int = 0,
            fast_compile: bool = False):
    """The compiled ``run_chunk(state, data, hparams) -> (state, logs)`` for ``args``.

    Compiled once per (task, settings, argument shapes) and kept: other seeds,
    learning rates or loss weights of the same shapes reuse it.  ``state`` is donated.
    """
    settings = (epochs, chunk, patience, plateau, mesh, member_group)
    key = (task, settings, fast_compile, _signature(args))
    compiled = _COMPILED.get(key)
    if compiled is None:
        fn = _grouped(_chunk_fn(task, epochs=epochs, chunk=chunk, patience=patience,
                                plateau=plateau, mesh=mesh), member_group)
        options = {"xla_backend_optimization_level": 0} if fast_compile else None
        compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile(compiler_options=options)
        _COMPILE_COUNT[0] += 1
        if len(_COMPILED) >= 16:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = compiled
    return compiled


def init_state(task: Task, data: Data, members: Members, mesh: Mesh | None = None):
    """``(state, data, hparams)`` on the device(s), ready for :func:`program`."""
    hparams = _put(members.hparams, mesh)
    data_d = _put(data, mesh)
    lr = jnp.asarray(members.learning_rate, jnp.float32)
    state = _init_program(task)(data_d, members.init_keys, members.rngs, lr, members.hparams)
    return _put_state(state, mesh), data_d, hparams


_INIT: dict = {}


def _init_program(task: Task) -> Callable:
    """The jitted initial state of ``task``'s members (one program per task).

    The members are initialised one after the other (``lax.map``), not
    vmapped: a vmapped orthogonal initialiser (the LSTM's recurrent kernels)
    becomes a batched QR factorisation, whose CPU kernel splits the batch over
    XLA's intra-op thread pool from inside that pool and can wait forever on a
    machine with few cores (seen with jaxlib 0.10.2 on 2 cores, N >= 2 members).
    """
    if task not in _INIT:
        if len(_INIT) >= 16:
            _INIT.pop(next(iter(_INIT)))

        def init(data, keys, rngs, lr, hparams):
            return jax.lax.map(lambda a: _init_state(task, data, *a), (keys, rngs, lr, hparams))

        _INIT[task] = jax.jit(init)
    return _INIT[task]


def _put(tree, mesh: Mesh | None):
    """Device arrays; with a mesh, replicated on every device (also across hosts)."""
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    replicated = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated)
    # several hosts: every process holds the same (small) arrays and contributes
    # them as its part of one global, replicated array
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)), tree
    )


def _put_state(state: State, mesh: Mesh | None) -> State:
    if mesh is None:
        return state
    wrap = lambda k: jax.random.wrap_key_data(_put(jax.random.key_data(k), mesh))  # noqa: E731
    plain = _put(state._replace(rng=None), mesh)
    return plain._replace(rng=wrap(state.rng))


def fit(
    task: Task,
    data: Data,
    members: Members,
    *,
    epochs: int,
    patience: int | None = None,
    plateau: Plateau | None = None,
    chunk: int = 10,
    mesh: Mesh | None = None,
    member_group: int = 0,
    fast_compile: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[TrainResult]:
    """Trains every member of ``members`` in ONE compiled program (see the module doc).

    Args:
      task: the family's functions.
      data: shared data (numpy or jax arrays).
      members: N members.
      epochs: at most this many epochs per member.
      patience: stop a member after this many epochs without a better
        validation score (None: never; needs ``task.validate``).
      plateau: learning-rate cuts on a validation plateau (needs ``task.validate``).
      chunk: epochs per call of the compiled program (the host logs between calls).
      mesh: shard every minibatch over this data-parallel mesh.
      member_group: vmap at most this many members at once (0: all).
      fast_compile: XLA backend optimisation level 0 (quick to compile, slower to run).
      log: progress sink (default: stderr).

    Returns:
      One :class:`TrainResult` per member, in order.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if task.validate is None and (patience is not None or plateau is not None):
        raise ValueError("patience and plateau need a task with a validation score")
    n = len(members)
    chunk = max(1, min(chunk, epochs))
    t0 = time.perf_counter()
    state, data_d, hparams = init_state(task, data, members, mesh)
    settings = dict(epochs=epochs, chunk=chunk, patience=patience, plateau=plateau, mesh=mesh,
                    member_group=member_group, fast_compile=fast_compile)
    hist: list[dict[str, list[float]]] = [{} for _ in range(n)]
    lanes = np.arange(n)  # the member each lane of the program trains
    final: dict[int, tuple] = {}  # member -> (params, best val, best epoch, epochs run, lr)
    compile_seconds = 0.0

    def member_final(lanes_of: np.ndarray) -> list[tuple]:
        params = state.best_params if task.validate is not None else state.params
        host = jax.device_get((params, state.best_val, state.best_epoch, state.epoch,
                               state.opt_state.hyperparams["learning_rate"]))
        return [jax.tree_util.tree_map(lambda x, lane=lane: x[lane], host) for lane in lanes_of]

    def settle(which: np.ndarray) -> None:
        """Copies the final state of the members in lanes ``which`` to the host."""
        for lane, f in zip(which, member_final(which), strict=True):
            final[int(lanes[lane])] = f

    t_first, first_chunk_epochs, done, complete = None, chunk, 0, False
    ckpt = resume.current_fit()
    saved = ckpt.load() if ckpt is not None else None
    if saved is not None:
        arrays, meta = saved
        if (meta["members"], meta["epochs"], meta["chunk"]) != (n, epochs, chunk):
            raise RunDirError(f"the training state in {ckpt.path} is of another training "
                              f"({meta['members']} members, {meta['epochs']} epochs, chunks of "
                              f"{meta['chunk']}); resume needs the same config")
        like = member_final(np.arange(1))[0]
        as_jax = lambda t: jax.tree_util.tree_map(  # noqa: E731
            lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), t)
        state = _put_state(as_jax(resume.unflatten("state", arrays, state)), mesh)
        hparams = _put(resume.unflatten("hparams", arrays, hparams), mesh)
        final = {int(m): resume.unflatten(f"final{m}", arrays, like) for m in meta["final"]}
        lanes, hist = np.asarray(meta["lanes"], np.int64), meta["hist"]
        done, complete = int(meta["done"]), bool(meta["complete"])
        log(f"resumed from the training state at epoch {done}" + (" (finished)" if complete else ""))

    def save_state(finished: bool) -> None:
        arrays = {**resume.flatten("state", state), **resume.flatten("hparams", hparams)}
        for m, f in final.items():
            arrays.update(resume.flatten(f"final{m}", f))
        ckpt.save(arrays, {"members": n, "epochs": epochs, "chunk": chunk, "done": done,
                           "lanes": lanes.tolist(), "final": sorted(final), "hist": hist,
                           "complete": finished})

    stops = resume.StopRequests(log) if ckpt is not None else contextlib.nullcontext()
    with stops:
        while not complete and done < epochs:
            tc = time.perf_counter()
            count = _COMPILE_COUNT[0]
            run_chunk = program(task, (state, data_d, hparams), **settings)
            if _COMPILE_COUNT[0] > count:
                compile_seconds += time.perf_counter() - tc
            state, logs = run_chunk(state, data_d, hparams)
            logs = {k: np.asarray(v) for k, v in logs.items()}  # [lanes, chunk]
            if t_first is None:
                t_first = time.perf_counter()  # the first chunk includes compilation
            done += chunk
            val_key = f"val_{task.val_name}"
            for lane, i in enumerate(lanes):
                keep = ~np.isnan(logs["train_loss"][lane])
                for name, x in logs.items():
                    hist[i].setdefault(name, []).extend(x[lane][keep].tolist())
            stopped = np.asarray(state.stopped)
            if task.validate is not None:
                best = np.concatenate([np.asarray(state.best_val), [f[1] for f in final.values()]])
                vl = logs[val_key]
                if n == 1 and not np.isnan(vl[0]).all():
                    k = ~np.isnan(vl[0])
                    parts = [f"{name.replace('_', ' ')} {logs[name][0][k][-1]:.3e}" for name in logs]
                    log(f"epoch {int(state.epoch[0]):5d}/{epochs}  " + "  ".join(parts)
                        + f"  best {best[0]:.3e} @ {int(state.best_epoch[0]) + 1}")
                elif n > 1:
                    log(f"epoch {done:5d}/{epochs}  members training {int((~stopped).sum())}/{n}  "
                        f"best {val_key} {best.min():.3e} .. {best.max():.3e}")
            if stopped.all():
                if done < epochs:
                    log(f"early stop: no improvement for {patience} epochs"
                        + (" in every member" if n > 1 else ""))
                break
            # Stopped members would still be computed (and discarded) every epoch: once a
            # quarter of the lanes (at least one) has stopped, the program continues with the
            # active members only (one more compilation for the narrower program).
            if mesh is None and stopped.sum() >= max(1, len(lanes) // 4):
                settle(np.flatnonzero(stopped))
                active = np.flatnonzero(~stopped)
                state, hparams = _take_members((state, hparams), active)
                lanes = lanes[active]
                log(f"epoch {done:5d}/{epochs}  continuing with the {len(lanes)} active member(s) only")
            if ckpt is not None and (ckpt.due() or stops.requested):
                save_state(False)
            if ckpt is not None and stops.requested:
                log(f"saved the training state at epoch {done} in {ckpt.path}")
                raise KeyboardInterrupt
    settle(np.arange(len(lanes)))
    if ckpt is not None and not complete:
        save_state(True)
    seconds = time.perf_counter() - t0
    done = min(done, epochs)
    steady = done - first_chunk_epochs  # epochs computed after compilation
    per_epoch = ((time.perf_counter() - t_first) / steady if steady > 0 and t_first is not None
                 else seconds / max(done, 1))
    return [
        TrainResult(
            params=final[i][0],
            best_val=float(final[i][1]),
            best_epoch=int(final[i][2]) + 1,
            epochs_run=int(final[i][3]),
            learning_rate=float(final[i][4]),
            seconds=seconds,
            compile_seconds=compile_seconds,
            seconds_per_epoch=per_epoch,
            history=hist[i],
        )
        for i in range(n)
    ]


def _take_members(tree, idx: np.ndarray):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def stack_members(params_list) -> Any:
    """Stacks N parameter pytrees on a new leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *params_list)


def member_params(params: Any, i: int) -> Any:
    """Parameters of member ``i`` from a member-stacked pytree."""
    return jax.tree_util.tree_map(lambda a: a[i], params)


def shuffled_batches(num_rows: int, batch_size: int):
    """A ``plan`` helper: a fresh permutation of ``num_rows`` rows cut into minibatches.

    Returns ``(idx [S, B], mask [S, B])`` builders: ``steps`` = ceil(rows / B); the
    last minibatch is padded with row 0 and masked (every row counts once per
    epoch, as a PyTorch loader without ``drop_last``).
    """
    steps = math.ceil(num_rows / batch_size)
    padded = steps * batch_size

    def cut(perm):
        perm = jnp.concatenate([perm, jnp.zeros(padded - num_rows, perm.dtype)])
        mask = (jnp.arange(padded) < num_rows).astype(jnp.float32)
        return perm.reshape(steps, batch_size), mask.reshape(steps, batch_size)

    return steps, cut
