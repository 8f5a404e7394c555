"""Run folders: where a run writes its config, metrics, tables and checkpoints.

A run folder holds::

    slbjax-run.json  the marker: the run's status (running / finished / failed /
                     interrupted), its process, and the entries the run wrote
    .slbjax.lock     held (flock) by the process writing the folder
    config.json      resolved config (with the experiment name and family)
    metrics.json     flat JSON of numbers
    *.csv            per-cell metrics, predictions, tables
    checkpoints/     orbax checkpoints (see slbjax.checkpoint)

Nothing a user keeps is lost: an existing, non-empty folder is never written
into unless it holds the marker, and ``overwrite=True`` then removes only the
entries the marker lists (what slbjax wrote there), never other files, never
the working directory, the home folder or a folder holding the data.  A
folder whose run failed or was interrupted is ours and holds nothing
finished: a new run replaces it without ``overwrite``.  Two processes never
write one folder (the lock), and JSON outputs are written to a temporary name
and moved into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slbjax import config as cfglib
from slbjax.errors import RunDirError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MARKER_FILE = "slbjax-run.json"
LOCK_FILE = ".slbjax.lock"
TRAIN_STATE_DIR = "train-state"  # slbjax.train.resume.STATE_DIR
STATUSES = ("running", "finished", "failed", "interrupted")


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    """A fresh folder ``runs/<experiment>-<timestamp>`` (suffixed if it exists)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{experiment}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = Path(f"{base}-{k}")
        k += 1
    return path


def read_marker(path: str | Path) -> dict | None:
    """The folder's run marker, or None when it has none (not a slbjax run folder)."""
    marker = Path(path) / MARKER_FILE
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return {"status": "failed", "files": []}  # ours, but damaged: nothing in it is trusted
    return data if isinstance(data, dict) else {"status": "failed", "files": []}


def _write_marker(path: Path, status: str, files: list[str], started: str) -> None:
    write_json(path / MARKER_FILE, {
        "status": status, "pid": os.getpid(), "started": started,
        "updated": _dt.datetime.now().isoformat(timespec="seconds"), "files": sorted(files)})


def _protected(path: Path, data_dir: Path | None) -> str | None:
    """Why ``path`` may never be emptied, or None."""
    path = path.resolve()
    if path == Path.home().resolve():
        return "it is your home folder"
    cwd = Path.cwd().resolve()
    if cwd == path or path in cwd.parents:
        return "it holds the working directory"
    for d in (data_dir, os.environ.get("SLBJAX_DATA")):
        if d and (Path(d).resolve() == path or path in Path(d).resolve().parents):
            return f"it holds the data folder {d}"
    return None


def _own_entries(path: Path, marker: dict) -> list[Path]:
    """What the marker says slbjax wrote in ``path`` (names only, never outside it)."""
    names = {str(n) for n in marker.get("files", []) if isinstance(n, str)}
    names |= {MARKER_FILE, CONFIG_FILE, METRICS_FILE}
    return [path / n for n in sorted(names) if "/" not in n and n not in ("", ".", "..")]


def _remove_own(path: Path, marker: dict) -> None:
    for entry in _own_entries(path, marker):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def prepare_run_dir(path: str | Path, *, overwrite: bool = False,
                    data_dir: str | Path | None = None) -> Path:
    """Checks that ``path`` may take a new run and clears what an earlier run wrote there.

    Empty or missing: created.  Holding a marker of a failed or interrupted run:
    its files are removed.  Holding a finished run: refused unless ``overwrite``,
    which removes the files that run wrote (and nothing else).  Anything else
    that is not empty, and with ``overwrite`` the working directory, the home
    folder or a folder holding the data: refused.  Call it with the folder's
    lock held (:func:`lock_run_dir`).

    Raises:
      RunDirError: the folder may not be used, with the reason.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run folder {path} is a file, not a folder")
    entries = [e for e in path.iterdir() if e.name != LOCK_FILE] if path.is_dir() else []
    if entries:
        marker = read_marker(path)
        if marker is None:
            why = _protected(path, data_dir) or "it is not empty"
            raise RunDirError(
                f"refusing to use {path}: {why} and holds no slbjax run ({MARKER_FILE}); "
                "choose another --workdir")
        status = marker.get("status")
        if status == "finished" and not overwrite:
            raise RunDirError(
                f"run folder {path} already exists and holds a finished run; choose another "
                "--workdir or pass --overwrite to replace it")
        # "running" with the lock free: a run that was killed; like failed runs, it is replaced,
        # unless it saved a training state worth continuing
        if status != "finished" and (path / TRAIN_STATE_DIR).is_dir() and not overwrite:
            raise RunDirError(
                f"run folder {path} holds the saved training state of a run that did not finish "
                f"(status {status!r}); pass --resume to continue it or --overwrite to start again")
        reason = _protected(path, data_dir)
        if reason:
            raise RunDirError(f"refusing to clear {path}: {reason}")
        _remove_own(path, marker)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def lock_run_dir(path: str | Path) -> Iterator[Path]:
    """Holds the folder's lock (created with the folder) while the block runs.

    Raises:
      RunDirError: another process holds it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"run folder {path} is being written by another slbjax process; "
                              "wait for it or choose another --workdir") from None
        yield path
    finally:
        os.close(fd)


class RunFolder:
    """A run's folder while it runs: its marker says ``running`` until :meth:`finish`;
    leaving the block otherwise marks it ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``."""

    def __init__(self, path: Path, inherited: tuple[str, ...] = ()):
        self.path = path
        self.started = _dt.datetime.now().isoformat(timespec="seconds")
        # what was there before, except what an earlier attempt of this run wrote (on resume)
        self.before = {e.name for e in path.iterdir()} - set(inherited)
        self.status = "running"
        _write_marker(path, "running", [], self.started)

    def _written(self) -> list[str]:
        return [e.name for e in self.path.iterdir()
                if e.name not in self.before or e.name in (CONFIG_FILE, METRICS_FILE)]

    def finish(self) -> None:
        self.status = "finished"
        _write_marker(self.path, "finished", self._written(), self.started)

    def close(self, exc: BaseException | None) -> None:
        if self.status != "finished":
            status = "interrupted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
            with contextlib.suppress(OSError):
                _write_marker(self.path, status, self._written(), self.started)


def resumable(point: RunPoint) -> str | None:
    """Why ``point``'s folder cannot be resumed, or None when it can: a run of exactly this
    experiment and config that did not finish and saved a training state."""
    d = Path(point.run_dir)
    marker = read_marker(d)
    if marker is None:
        return f"{d} holds no slbjax run"
    if marker.get("status") == "finished":
        return f"the run in {d} has finished; there is nothing to resume"
    if not (d / TRAIN_STATE_DIR).is_dir():
        return f"{d} holds no saved training state (the run stopped before its first save)"
    try:
        saved = read_json(d / CONFIG_FILE)
        same = saved["experiment"] == point.experiment and saved["config"] == cfglib.to_dict(point.cfg)
    except (RunDirError, KeyError, TypeError):
        same = False
    if not same:
        return (f"{d} holds a run of another experiment or config; resume it with the same "
                "experiment, --set values and --smoke as before")
    return None


@contextlib.contextmanager
def open_run_dir(path: str | Path, *, overwrite: bool = False, data_dir: str | Path | None = None,
                 resume: bool = False) -> Iterator[RunFolder]:
    """Locks, checks and clears ``path`` (:func:`prepare_run_dir`; with ``resume`` nothing is
    cleared: the run goes on in it) and marks it running for the block; the marker records
    the outcome."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run folder {path} is a file, not a folder")
    if path.is_dir() and any(e.name != LOCK_FILE for e in path.iterdir()) and read_marker(path) is None:
        # raises before the lock file is put into a folder of someone else
        prepare_run_dir(path, data_dir=data_dir)
    with lock_run_dir(path):
        inherited: tuple[str, ...] = ()
        if resume:
            inherited = tuple((read_marker(path) or {}).get("files", ())) + (TRAIN_STATE_DIR,)
        else:
            prepare_run_dir(path, overwrite=overwrite, data_dir=data_dir)
        folder = RunFolder(path, inherited)
        try:
            yield folder
        except BaseException as e:
            folder.close(e)
            raise
        folder.close(None)


def require_finished(run_dir: str | Path) -> None:
    """Raises RunDirError unless the folder's run finished (folders without a marker, from
    before markers existed, are taken as they are)."""
    marker = read_marker(run_dir)
    if marker is not None and marker.get("status") != "finished":
        raise RunDirError(f"{run_dir} holds a run that did not finish (status "
                          f"{marker.get('status')!r}); run it again or choose a finished run")


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
    """Writes JSON to a temporary name beside ``path`` and moves it into place, so a reader
    (or a crash) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def write_provenance(run_dir: str | Path, data_dir: Path | None, reads: set[str]) -> None:
    """Adds the ``provenance`` section (data files and their hashes, versions, commit) to
    ``config.json``; comparisons of configs read only its ``config`` section."""
    from slbjax import provenance

    path = Path(run_dir) / CONFIG_FILE
    data = read_json(path)
    data["provenance"] = provenance.describe(data_dir, reads)
    write_json(path, data)


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
    """Returns (experiment name, config dict) of a finished run.

    Raises:
      RunDirError: no such folder, no readable config, or a run that did not finish.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run folder {run_dir} does not exist")
    require_finished(run_dir)
    data = read_json(run_dir / CONFIG_FILE)
    try:
        return data["experiment"], data["config"]
    except (KeyError, TypeError):
        raise RunDirError(f"{run_dir / CONFIG_FILE} lacks 'experiment'/'config'") from None


def finished_metrics(run_dir: str | Path, cfg: Any, experiment: str | None = None) -> dict | None:
    """The metrics of a finished run of exactly ``cfg`` (and ``experiment``, if given), else None.

    A missing or unreadable folder, config or metrics file, or a marker that
    does not say ``finished``, means "not finished".
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
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[bool]]:
    """Runs every point that has not run yet: the one way ``run``, ``sweep``,
    ``report`` and the history baselines execute runs.

    With ``reuse``, a point whose folder holds a finished run of exactly its
    config (and experiment) is not run again, a run of it that was cut off
    goes on from its saved training state, and any other run of ours in the
    folder is replaced.  With ``resume`` every point must be such a run that
    was cut off, and goes on (:mod:`slbjax.train.resume`).  Otherwise a
    folder of a failed or interrupted run without training state is replaced;
    a finished run (or a saved training state) is refused unless
    ``overwrite``, and a folder without the run marker always (see
    :func:`prepare_run_dir`).  Points whose configs differ only in values the
    family trains as members of one program (its runner's
    ``shape_signature``) run as one program (``train_and_evaluate_group``),
    whose training state lives in the first point's folder.  Each folder gets
    ``config.json`` before training and ``metrics.json`` after.

    Returns:
      (metrics of each point, whether each was reused), in order.
    """
    from slbjax import provenance, run_figures, runners
    from slbjax.train import resume as train_resume

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    found = [finished_metrics(p.run_dir, p.cfg, p.experiment) if reuse else None for p in points]
    reused = [m is not None for m in found]
    if resume:
        for p in points:
            why = resumable(p)
            if why:
                raise RunDirError(f"cannot resume: {why}")
    checked: list[set[str]] = []  # files each point's check read (a loader may cache them)
    for p, done in zip(points, reused, strict=True):  # bad or missing data fail before any folder
        check = getattr(runners.for_config(p.cfg), "check_inputs", None)
        with provenance.recording() as seen:
            if check is not None and not done:
                check(p.cfg, data_dir)
        checked.append(seen)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        if found[i] is None:
            runner = runners.for_config(p.cfg)
            sig = runner.shape_signature(p.cfg) if hasattr(runner, "train_and_evaluate_group") else i
            groups.setdefault((type(p.cfg).family, sig), []).append(i)
    for (family, _), todo in groups.items():
        runner = runners.for_family(family)
        with contextlib.ExitStack() as stack:
            folders, going_on = [], []
            for i in todo:
                d = points[i].run_dir
                go_on = (resume or reuse) and resumable(points[i]) is None
                # a sweep's or report's own point folders: another run of ours there is replaced
                mine = reuse and read_marker(d) is not None
                folders.append(stack.enter_context(
                    open_run_dir(d, overwrite=overwrite or mine, data_dir=data_dir, resume=go_on)))
                if not go_on:
                    write_config(d, points[i].experiment, points[i].cfg)
                going_on.append(go_on)
            if any(going_on):
                log("resuming " + ", ".join(str(points[i].run_dir) for i, g in zip(todo, going_on,
                                                                                   strict=True) if g))
            stack.enter_context(train_resume.training_state(points[todo[0]].run_dir, going_on[0]))
            if len(todo) > 1:
                log(f"training {len(todo)} runs in one program: "
                    + ", ".join(points[i].run_dir.name for i in todo))
            reads = stack.enter_context(provenance.recording())
            if hasattr(runner, "train_and_evaluate_group"):
                results = runner.train_and_evaluate_group(
                    [points[i].cfg for i in todo], data_dir, [points[i].run_dir for i in todo])
            else:
                results = [runner.train_and_evaluate(points[i].cfg, data_dir, points[i].run_dir)
                           for i in todo]
            for i, m, folder in zip(todo, results, folders, strict=True):
                write_provenance(points[i].run_dir, data_dir, reads | checked[i])
                write_metrics(points[i].run_dir, m)
                run_figures.draw_run_figures(points[i].run_dir)  # listed in the marker by finish()
                folder.finish()
                found[i] = read_json(points[i].run_dir / METRICS_FILE)
    return found, reused
