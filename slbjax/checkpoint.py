"""Checkpoints with orbax: parameters as their own item, metadata as JSON.

Layout inside a run folder::

    checkpoints/<step>/params/    the model parameters (a pytree of arrays)
    checkpoints/<step>/meta/      JSON: normalisers and whatever a reload needs

``params`` is kept apart from any optimizer state so a later study restores
the model without knowing how it was trained.  Saves are waited for before
returning, so a finished run's checkpoint is always complete on disk.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from slbjax.errors import RunDirError

CHECKPOINT_DIR = "checkpoints"


def _manager(run_dir: str | Path, *, create: bool) -> ocp.CheckpointManager:
    directory = Path(run_dir).absolute() / CHECKPOINT_DIR
    # in a multi-process run only process 0 writes (parameters are host-local copies)
    multi = jax.process_count() > 1
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        create=False,
        enable_async_checkpointing=False,  # nothing in flight when a signal stops the process
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={0} if multi else None
        ),
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("params", "meta"))


def save(run_dir: str | Path, step: int, params: Any, meta: dict) -> None:
    """Saves ``params`` (pytree of arrays) and ``meta`` (JSON-able dict) at ``step``.

    In a multi-process run only process 0 saves; the others return at once.
    """
    if jax.process_index() != 0:
        return
    params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    with _manager(run_dir, create=True) as mngr:
        mngr.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        mngr.wait_until_finished()


@contextlib.contextmanager
def _failure_quiet():
    """Standard error muted while a restore fails: tensorstore's reads still in flight when
    one read fails print ``Event loop is closed`` tracebacks from their threads.  On success
    nothing is muted afterwards; on failure the pending reads get a moment to finish."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    except Exception:
        time.sleep(0.3)
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load(run_dir: str | Path) -> tuple[Any, dict]:
    """Restores (params, meta) of the latest step, params as numpy arrays.

    Raises:
      RunDirError: if the folder holds no checkpoint.
    """
    directory = Path(run_dir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        raise RunDirError(f"{run_dir} holds no checkpoint (no {CHECKPOINT_DIR}/ folder)")
    with _manager(run_dir, create=False) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise RunDirError(f"{directory} holds no finished checkpoint")
        try:
            with _failure_quiet():
                restored = mngr.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax and tensorstore raise many kinds; all mean a damaged step
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise RunDirError(f"{directory / str(step)}: the checkpoint is damaged or incomplete "
                              f"({type(e).__name__}{': ' + first if first else ''}); train the run "
                              "again") from None
    if not isinstance(restored.get("meta"), dict) or restored.get("params") is None:
        raise RunDirError(f"{directory / str(step)}: the checkpoint lacks its params or meta item; "
                          "train the run again")
    return restored["params"], restored["meta"]
