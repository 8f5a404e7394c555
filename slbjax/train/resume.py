"""Resumable training: the core's whole state saved in the run folder, picked up after a kill.

A run executes inside :func:`training_state` (``slbjax.rundir.execute`` does
it).  Every call of :func:`slbjax.train.loop.fit` in the run then gets its
own numbered checkpoint folder (``train-state/fit-<k>``; a run's fits happen
in the same order each time) and saves there, with orbax's
``CheckpointManager`` (synchronous: nothing is left half-written by a
signal), everything the loop needs to go on: each lane's parameters,
optimizer state, random key, best parameters and early-stopping counters,
the per-member values, the members already settled, the history and the
epoch count.  The best parameters travel inside the state, so the latest
checkpoint is also the best one.

It saves after a chunk of epochs once ``SLBJAX_CHECKPOINT_SECONDS`` (default
60) have passed since the last save, when the fit ends, and when the process
is asked to stop (Ctrl-C or SIGTERM: the signal is held until the chunk in
flight ends, then the state is saved and the run stops as interrupted; a
second Ctrl-C stops at once).  With ``resume`` a fit starts from its latest
checkpoint: a fit that had ended is not trained again, one that was cut off
goes on from the last saved chunk, and, the program and its inputs being the
same, it ends with the same numbers as a run that was never stopped.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from slbjax.rundir import TRAIN_STATE_DIR as STATE_DIR

_STORE: contextvars.ContextVar[Store | None] = contextvars.ContextVar("slbjax_train_store", default=None)


def save_interval() -> float:
    return float(os.environ.get("SLBJAX_CHECKPOINT_SECONDS", "60"))


class Store:
    """The training checkpoints of one run folder: ``fit()`` call k gets ``fit-<k>``."""

    def __init__(self, root: Path, resume: bool):
        self.root = root
        self.resume = resume
        self.calls = 0

    def next_fit(self) -> FitCheckpoint:
        self.calls += 1
        return FitCheckpoint(self.root / f"fit-{self.calls}", self.resume)


class FitCheckpoint:
    """The saved states of one ``fit()`` call."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.resume = resume
        self.last_save = time.monotonic()

    def _manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               enable_async_checkpointing=False)
        return ocp.CheckpointManager(self.path.absolute(), options=options,
                                     item_names=("arrays", "meta"))

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= save_interval()

    def save(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        with self._manager() as mngr:
            step = (mngr.latest_step() or 0) + 1
            mngr.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
            mngr.wait_until_finished()
        self.last_save = time.monotonic()

    def load(self) -> tuple[dict[str, np.ndarray], dict] | None:
        """The latest saved state, when resuming and there is one."""
        if not (self.resume and self.path.is_dir()):
            return None
        with self._manager() as mngr:
            step = mngr.latest_step()
            if step is None:
                return None
            got = mngr.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(),
                                                             meta=ocp.args.JsonRestore()))
        return {k: np.asarray(v) for k, v in got["arrays"].items()}, got["meta"]


def current_fit() -> FitCheckpoint | None:
    """The checkpoint of the ``fit()`` call starting now, inside :func:`training_state`."""
    store = _STORE.get()
    if store is None or jax.process_count() > 1:
        return None
    return store.next_fit()


@contextlib.contextmanager
def training_state(run_dir: Path, resume: bool) -> Iterator[Store]:
    """Fits inside the block save their state in ``run_dir/train-state`` (and, with
    ``resume``, start from it); the folder is removed when the block ends normally."""
    store = Store(Path(run_dir) / STATE_DIR, resume)
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)
    shutil.rmtree(store.root, ignore_errors=True)


# ------------------------------------------------------------------ flattening the loop's state
def flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    """``{prefix.i: leaf}`` of a pytree (typed random keys as their key data)."""
    leaves = jax.tree_util.tree_leaves(jax.device_get(_keys_as_data(tree)))
    return {f"{prefix}.{i}": np.asarray(x) for i, x in enumerate(leaves)}


def unflatten(prefix: str, arrays: dict[str, np.ndarray], like: Any) -> Any:
    """The pytree of ``like``'s structure from :func:`flatten`'s arrays (shapes as saved)."""
    treedef = jax.tree_util.tree_structure(_keys_as_data(like))
    leaves = [arrays[f"{prefix}.{i}"] for i in range(treedef.num_leaves)]
    return _data_as_keys(jax.tree_util.tree_unflatten(treedef, leaves), like)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_as_data(tree):
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_as_keys(tree, like):
    return jax.tree_util.tree_map(
        lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x,
        tree, like)


# ------------------------------------------------------------------ stopping at a chunk's end
class StopRequests:
    """While active (main thread only), the first SIGINT / SIGTERM is recorded instead of
    raised, so the loop can save at the end of the chunk in flight; a second one raises."""

    def __init__(self, log):
        self.requested = False
        self.log = log
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log("stop requested: saving the training state at the end of this chunk "
                 "(again to stop at once)")

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
