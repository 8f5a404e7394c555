"""Run folders: where a run writes its config, metrics, tables and checkpoints.

A run folder holds::

    config.json      resolved config (with the experiment name and family)
    metrics.json     flat JSON of numbers
    *.csv            per-cell metrics, predictions, tables
    checkpoints/     orbax checkpoints (see slbjax.checkpoint)

An existing, non-empty folder is never overwritten silently: the caller must
ask for ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slbjax import config as cfglib
from slbjax.errors import RunDirError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    """A fresh folder ``runs/<experiment>-<timestamp>`` (suffixed if it exists)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{experiment}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = Path(f"{base}-{k}")
        k += 1
    return path


def prepare_run_dir(path: str | Path, *, overwrite: bool = False) -> Path:
    """Creates ``path`` for a new run.

    Raises:
      RunDirError: if ``path`` exists and is not empty and ``overwrite`` is False,
        or if it is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run folder {path} is a file, not a folder")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"run folder {path} already exists and is not empty; choose another "
                "--workdir or pass --overwrite to replace it"
            )
        if not (path / CONFIG_FILE).exists():
            raise RunDirError(
                f"refusing to overwrite {path}: it does not look like a slbjax run "
                f"(no {CONFIG_FILE}); remove it yourself if you mean it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(_jsonable(data), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON ({e})") from None


def write_config(run_dir: str | Path, experiment: str, cfg: Any) -> None:
    """Writes the resolved config as ``config.json``."""
    data = {"experiment": experiment, "config": cfglib.to_dict(cfg)}
    write_json(Path(run_dir) / CONFIG_FILE, data)


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Writes ``metrics.json``: a flat dict of numbers (non-finite become null)."""
    flat = {}
    for k, v in metrics.items():
        if isinstance(v, np.generic | np.ndarray):
            v = np.asarray(v).item()
        if not isinstance(v, int | float | bool) and v is not None:
            raise TypeError(f"metric {k} is not a number: {v!r}")
        flat[k] = v
    write_json(Path(run_dir) / METRICS_FILE, flat)


def read_run_config(run_dir: str | Path) -> tuple[str, dict]:
    """Returns (experiment name, config dict) of a finished run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run folder {run_dir} does not exist")
    data = read_json(run_dir / CONFIG_FILE)
    try:
        return data["experiment"], data["config"]
    except (KeyError, TypeError):
        raise RunDirError(f"{run_dir / CONFIG_FILE} lacks 'experiment'/'config'") from None


def finished_metrics(run_dir: str | Path, cfg: Any, experiment: str | None = None) -> dict | None:
    """The metrics of a finished run of exactly ``cfg`` (and ``experiment``, if given), else None.

    A missing or unreadable folder, config or metrics file means "not finished".
    """
    try:
        exp, cfg_dict = read_run_config(run_dir)
        if cfg_dict == cfglib.to_dict(cfg) and experiment in (None, exp):
            return read_json(Path(run_dir) / METRICS_FILE)
    except Exception:
        return None
    return None


# ----------------------------------------------------------------------------- executing runs


@dataclasses.dataclass(frozen=True)
class RunPoint:
    """One run: the experiment it belongs to, its resolved config and its folder."""

    experiment: str
    cfg: Any
    run_dir: Path


def execute(
    points: list[RunPoint],
    data_dir: Path | None,
    *,
    reuse: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[bool]]:
    """Runs every point that has not run yet: the one way ``run``, ``sweep``,
    ``report`` and the history baselines execute runs.

    With ``reuse``, a point whose folder holds a finished run of exactly its
    config (and experiment) is not run again, and a folder of ours without
    metrics (an interrupted run) is replaced.  Any other non-empty folder is
    refused unless ``overwrite``.  Points whose configs differ only in values
    the family trains as members of one program (its runner's
    ``shape_signature``) run as one program (``train_and_evaluate_group``).
    Each folder gets ``config.json`` before training and ``metrics.json`` after.

    Returns:
      (metrics of each point, whether each was reused), in order.
    """
    from slbjax import runners

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    found = [finished_metrics(p.run_dir, p.cfg, p.experiment) if reuse else None for p in points]
    reused = [m is not None for m in found]
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        if found[i] is None:
            runner = runners.for_config(p.cfg)
            sig = runner.shape_signature(p.cfg) if hasattr(runner, "train_and_evaluate_group") else i
            groups.setdefault((type(p.cfg).family, sig), []).append(i)
    for (family, _), todo in groups.items():
        runner = runners.for_family(family)
        for i in todo:
            d = points[i].run_dir
            prepare_run_dir(d, overwrite=overwrite or (reuse and (d / CONFIG_FILE).exists()))
            write_config(d, points[i].experiment, points[i].cfg)
        if len(todo) > 1:
            log(f"training {len(todo)} runs in one program: "
                + ", ".join(points[i].run_dir.name for i in todo))
        if hasattr(runner, "train_and_evaluate_group"):
            results = runner.train_and_evaluate_group(
                [points[i].cfg for i in todo], data_dir, [points[i].run_dir for i in todo])
        else:
            results = [runner.train_and_evaluate(points[i].cfg, data_dir, points[i].run_dir)
                       for i in todo]
        for i, m in zip(todo, results, strict=True):
            write_metrics(points[i].run_dir, m)
            found[i] = read_json(points[i].run_dir / METRICS_FILE)
    return found, reused
