"""Reloading finished runs: ``load_run`` and trajectory prediction for cell files.

``load_run(path)`` gives a downstream study what it needs: the resolved
config, the parameters, the normalisers and a ``predict`` function that
takes cell files (any supported published format) or :class:`Cell` objects.
``generate(run_dir, soc, soh, n, out_csv)`` writes pulse features generated
by a finished CVAE run.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from slbjax import checkpoint, provenance
from slbjax import config as cfglib
from slbjax.config import from_dict
from slbjax.configs.cvae import CvaeConfig
from slbjax.configs.imoe import ImoeConfig
from slbjax.data import ranges
from slbjax.data.cells import Cell
from slbjax.data.features import Normaliser, physics_features, trim_soc
from slbjax.data.imoe_files import find_cell_files, load_cell_file
from slbjax.data.pulse import FEATURES, NUM_FEATURES, PulseData
from slbjax.data.pulse_cases import CasePlan, Member
from slbjax.errors import ConfigError, DataError, RunDirError
from slbjax.evaluate.conformal import ensemble_spread, scaled_interval
from slbjax.evaluate.intervals import Z90
from slbjax.models.apply import batched_apply
from slbjax.models.cvae import PulseCVAE
from slbjax.models.trajectory import build_model
from slbjax.rundir import CONFIG_FILE, read_json, read_run_config
from slbjax.train import cvae as cvae_train
from slbjax.train.loop import member_params

TRAJECTORY_COLUMNS = ["cell", "start_cycle", "step", "predicted_capacity_ah", "true_capacity_ah"]
"""The trajectory columns, as a run's own ``predictions.csv`` has them."""
PREDICT_COLUMNS = [*TRAJECTORY_COLUMNS, "split", "source", "in_distribution"]
"""Columns of a prediction (an ensemble's ``lower90_ah, upper90_ah`` come before ``split``)."""
PROGRESS_CELLS = 10  # a progress line every this many cells ...
PROGRESS_SECONDS = 5.0  # ... or after this long, and at the end
_CHUNK = 4096  # rows per model call; shorter calls are padded to a power of two (>= 64)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cell_inputs(cell: Cell, horizon: int, soc_start: int) -> dict[str, np.ndarray]:
    """Inputs for a prediction from every valid row of ``cell``.

    The planned load beyond the last recorded cycle is taken equal to the last
    recorded cycle's load (an assumption, as the future load always is); the
    true capacity there is unknown (NaN).

    Returns:
      dict with ``qv`` [S, 50], ``features`` [S, F] (raw), ``load`` [S, L, 3],
      ``truth`` [S, L] (NaN past the record), ``start_row`` [S], ``start_cycle`` [S].
    """
    qv = trim_soc(cell.qv, soc_start)
    feats = physics_features(qv, cell.voltage_grid, cell.relaxation)
    starts = np.flatnonzero(cell.valid)
    rows = starts[:, None] + np.arange(horizon)[None, :]
    inside = rows < cell.num_cycles
    clipped = np.minimum(rows, cell.num_cycles - 1)
    truth = np.where(inside, cell.capacity_ah[clipped], np.nan)
    return {
        "qv": qv[starts], "features": feats[starts], "load": cell.load[clipped],
        "truth": truth, "start_row": starts, "start_cycle": cell.cycle[starts],
    }


def _members_fn(model) -> Any:
    """The jitted ``(params [M, ...], qv, features, load) -> [M, S, L]`` of ``model``, shared by
    every :class:`Run` of an equal model (reloading a run does not compile it again)."""
    try:
        return _cached_members_fn(model)
    except TypeError:  # a module with an unhashable field
        return _build_members_fn(model)


def _build_members_fn(model) -> Any:
    return jax.jit(jax.vmap(lambda p, q, f, u: batched_apply(model, p, q, f, u)[0],
                            in_axes=(0, None, None, None)))


_cached_members_fn = functools.lru_cache(maxsize=8)(_build_members_fn)


def _padded(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` with its first axis padded to ``size`` rows (copies of the last row)."""
    if len(a) == size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)])


def _where(cell: Cell, source: str | None) -> str:
    """How a message names the cell: its file (relative to the input) or its name."""
    if source:
        return source
    return cell.source if cell.source and cell.source != "synthetic" else cell.name


@dataclasses.dataclass
class Run:
    """A finished iMOE run, reloaded.

    Attributes:
      path: the run folder.
      experiment: experiment name.
      config: the resolved :class:`ImoeConfig`.
      params: model parameters (numpy pytree with a leading member axis of
        size ``ensemble_size``), loaded without optimizer state.
      ensemble_size: number of members (1 for a single model).
      feature_normaliser: standardisation fitted on the training cells.
      load_normaliser: standardisation of the future load (identity if unused).
      model: the flax module (target scaling included).
      interval_scale: multiplier ``q`` of the ensemble's 90 % interval
        ``mean +- q * member std``: the split-conformal ``q`` the run
        calibrated on its validation cells and stored in the checkpoint
        (``interval90`` in its metadata).  Runs saved before that calibration
        existed, and runs without validation windows, store none or the
        nominal one: they get ``1.645`` (normal quantile, uncalibrated; on
        UL-NCA CY25-05_1 it covered about half of the test points).
      interval_calibrated: whether ``interval_scale`` is a calibrated one.
      training_ranges: the ranges of the training cells
        (``training_ranges.json``, :mod:`slbjax.data.ranges`); None for runs
        written before they were recorded: their predictions get no range check.
      cell_roles: cell name -> ``train`` / ``val`` / ``test``, from the run's
        ``data_report.json``; None when the run has no such list.
      data_hashes: SHA-256 of the data files the run read (``config.json``
        provenance); a file named as a run cell but with other contents is
        not that cell.
    """

    path: Path
    experiment: str
    config: ImoeConfig
    params: Any
    ensemble_size: int
    feature_normaliser: Normaliser
    load_normaliser: Normaliser
    model: Any
    interval_scale: float = Z90
    interval_calibrated: bool = False
    training_ranges: ranges.TrainingRanges | None = None
    cell_roles: dict[str, str] | None = None
    data_hashes: frozenset[str] = frozenset()

    def __post_init__(self):
        self._fn = _members_fn(self.model)

    def split_of(self, cell: Cell) -> str:
        """``train``, ``val`` or ``test`` for a cell of the run, ``other`` for any other cell
        (``unknown`` when the run folder does not list its cells)."""
        if self.cell_roles is None:
            return "unknown"
        role = self.cell_roles.get(cell.name)
        if role is None:
            return "other"
        if self.data_hashes and os.path.isfile(cell.source) and \
                provenance.sha256(cell.source) not in self.data_hashes:
            return "other"  # named like a cell of the run, but not the file the run read
        return role

    def range_warning(self, cell: Cell, features: np.ndarray, where: str) -> str | None:
        """One line naming what of ``cell`` (its capacity, load, and the features [S, F] of its
        start rows) lies outside the training ranges, or None (also without ranges)."""
        if self.training_ranges is None:
            return None
        return self.training_ranges.warning(where, ranges.imoe_observed(cell, features))

    def _apply(self, qv: np.ndarray, feats: np.ndarray, load: np.ndarray) -> np.ndarray:
        """[M, S, L] members' trajectories, in calls of a few fixed sizes (one compile each)."""
        out = []
        for s in range(0, len(feats), _CHUNK):
            n = min(_CHUNK, len(feats) - s)
            size = min(_CHUNK, max(64, 1 << (n - 1).bit_length()))
            y = self._fn(self.params, *(_padded(a[s:s + n], size) for a in (qv, feats, load)))
            out.append(np.asarray(y, dtype=np.float64)[:, :n])
        return np.concatenate(out, 1)

    @property
    def columns(self) -> list[str]:
        """The columns of this run's predictions (with the interval of an ensemble)."""
        interval = ["lower90_ah", "upper90_ah"] if self.ensemble_size > 1 else []
        return [*TRAJECTORY_COLUMNS, *interval, *PREDICT_COLUMNS[len(TRAJECTORY_COLUMNS):]]

    def predict_cells(self, cells: Iterable[Cell], sources: Iterable[str] | None = None,
                      **options) -> pd.DataFrame:
        """Trajectory from every valid cycle of each cell.

        Columns :attr:`columns`: :data:`PREDICT_COLUMNS`, and for an ensemble,
        whose prediction is the members' mean, ``lower90_ah`` / ``upper90_ah``
        before ``split``: its 90 % interval ``mean +- interval_scale * member
        std`` (ddof 1), calibrated when the run stored a conformal scale (see
        :attr:`interval_scale`).  ``split`` is the cell's role in the run
        (:meth:`split_of`), ``source`` the file it came from (``sources``, else
        the cell's own path), and ``in_distribution`` whether the cell lies
        inside the training ranges (empty for a run without them).  A cell
        outside them is warned about on stderr, one line per cell; with
        ``refuse_out_of_distribution`` it raises.

        Args:
          cells: the cells (may be a generator: they are read one by one).
          sources: how to name each cell's file, aligned with ``cells``.
          options: of :meth:`iter_frames`: ``refuse_out_of_distribution`` (raise
            instead of warning), ``total`` (the number of cells, for the progress
            lines), ``progress`` (``[predict] i/total cells, rows`` lines on stderr).

        Raises:
          OutOfDistribution: a cell outside the training ranges, with
            ``refuse_out_of_distribution`` (or a run without ranges).
          DataError: a cell whose features do not fit the run.
        """
        frames = list(self.iter_frames(cells, sources, **options))
        if not frames:
            return pd.DataFrame(columns=self.columns)
        return pd.concat(frames, ignore_index=True)

    def iter_frames(
        self,
        cells: Iterable[Cell],
        sources: Iterable[str] | None = None,
        *,
        refuse_out_of_distribution: bool = False,
        total: int | None = None,
        progress: bool = False,
    ) -> Iterator[pd.DataFrame]:
        """:meth:`predict_cells` one cell at a time: yields each cell's table (cells without a
        valid cycle give none), so a caller can write them as they come."""
        horizon, soc = self.config.data.horizon, self.config.data.soc_start
        nfeat = self.feature_normaliser.mean.shape[0]
        if self.training_ranges is None:
            if refuse_out_of_distribution:
                raise ranges.OutOfDistribution.unchecked(self.path)
            _log(f"[predict] note: {self.path} holds no {ranges.RANGES_FILE} (trained before "
                 "training ranges were recorded): no out-of-distribution check was done; "
                 "in_distribution is left empty")
        rows, noted = 0, False
        t_last, said = time.monotonic(), -1
        sources = iter(sources) if sources is not None else None
        count = 0
        of = lambda: total if total is not None else "?"  # noqa: E731
        for count, cell in enumerate(cells, 1):
            where = _where(cell, next(sources, None) if sources is not None else None)
            x = cell_inputs(cell, horizon, soc)
            if x["features"].shape[1] != nfeat:
                raise DataError(
                    cell.source,
                    f"the run {self.path} was trained with {nfeat} physics features but this "
                    f"{cell.dataset} cell gives {x['features'].shape[1]} "
                    "(TPSL files have no relaxation data: 6 features instead of 12)",
                )
            warning = self.range_warning(cell, x["features"], where)
            if warning is not None:
                if refuse_out_of_distribution:
                    raise ranges.OutOfDistribution.for_cell(warning)
                if not noted:
                    _log(f"[predict] out-of-distribution check: {self.training_ranges.describe()}")
                    noted = True
                _log(f"warning: {warning}")
            if len(x["start_row"]):
                frame = self._frame(cell, x, where, warning)
                rows += len(frame)
                yield frame
            now = time.monotonic()
            if progress and (count % PROGRESS_CELLS == 0 or now - t_last >= PROGRESS_SECONDS):
                _log(f"[predict] {count}/{of()} cells, {rows} rows")
                t_last, said = now, count
        if progress and said != count:
            _log(f"[predict] {count}/{of()} cells, {rows} rows")

    def _frame(self, cell: Cell, x: dict, where: str, warning: str | None) -> pd.DataFrame:
        """The long table of one cell's predictions."""
        horizon = self.config.data.horizon
        feats = self.feature_normaliser.apply(x["features"]).astype(np.float32)
        load = self.load_normaliser.apply(x["load"]).astype(np.float32)
        mean, std = ensemble_spread(self._apply(x["qv"].astype(np.float32), feats, load))
        n = mean.shape[0]
        frame = pd.DataFrame({
            "cell": cell.name,
            "start_cycle": np.repeat(x["start_cycle"], horizon),
            "step": np.tile(np.arange(horizon), n),
            "predicted_capacity_ah": mean.reshape(-1),
            "true_capacity_ah": x["truth"].reshape(-1),
        })
        if self.ensemble_size > 1:
            lower, upper = scaled_interval(mean, std, self.interval_scale)
            frame["lower90_ah"] = lower.reshape(-1)
            frame["upper90_ah"] = upper.reshape(-1)
        frame["split"] = self.split_of(cell)
        frame["source"] = where
        inside = pd.NA if self.training_ranges is None else warning is None
        frame["in_distribution"] = pd.array([inside] * len(frame), dtype="boolean")
        return frame

    def predict(self, path: str | os.PathLike, *, refuse_out_of_distribution: bool = False,
                progress: bool = True) -> pd.DataFrame:
        """Predicts for every cell file under ``path`` (a file or a folder); ``source`` is each
        file relative to ``path``.  Progress goes to stderr (see :meth:`predict_cells`)."""
        frames = list(self.iter_predict(path, refuse_out_of_distribution=refuse_out_of_distribution,
                                        progress=progress))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.columns)

    def iter_predict(self, path: str | os.PathLike, *, refuse_out_of_distribution: bool = False,
                     progress: bool = True) -> Iterator[pd.DataFrame]:
        """:meth:`predict`, one cell file's table at a time (see :meth:`iter_frames`)."""
        files = find_cell_files(path)
        return self.iter_frames((load_cell_file(f) for f in files),
                                [ranges.relative_source(f, Path(path)) for f in files],
                                refuse_out_of_distribution=refuse_out_of_distribution,
                                total=len(files), progress=progress)


def _cell_roles(path: Path) -> dict[str, str] | None:
    """cell name -> role from the run's ``data_report.json``, or None without one."""
    try:
        cells = read_json(path / "data_report.json")["cells"]
        return {str(n): role for role in ("train", "val", "test") for n in cells.get(role, [])}
    except (RunDirError, KeyError, TypeError, AttributeError):
        return None


def _data_hashes(path: Path) -> frozenset[str]:
    """SHA-256 of the data files the run read (empty for runs without provenance)."""
    try:
        files = read_json(path / CONFIG_FILE)["provenance"]["files_sha256"]
        return frozenset(str(h) for h in files.values())
    except (RunDirError, KeyError, TypeError, AttributeError):
        return frozenset()


def load_run(path: str | os.PathLike) -> Run:
    """Reloads config, parameters and normalisers of an iMOE run folder.

    An ensemble's interval multiplier is the checkpoint's ``interval90.scale``
    (split-conformal on the run's validation cells); a run saved before
    intervals were calibrated has none and falls back to the nominal,
    uncalibrated 1.645 (said once on stderr).  The training ranges, the cells'
    roles and the hashes of the files read come from ``training_ranges.json``,
    ``data_report.json`` and ``config.json`` where the run has them.

    Raises:
      RunDirError: the folder does not hold a finished iMOE run.
    """
    path = Path(path)
    experiment, cfg_dict = read_run_config(path)
    if cfg_dict.get("__class__") != ImoeConfig.__name__:
        raise RunDirError(f"{path} holds a {cfg_dict.get('__class__')} run, not an iMOE run")
    params, meta = checkpoint.load(path)
    cfg = from_dict(ImoeConfig, cfg_dict)
    model = build_model(cfg, float(meta["target_mean"]), float(meta["target_std"]))
    interval = meta.get("interval90") or {}  # absent in runs saved before calibration
    calibrated = bool(interval.get("calibrated", False)) and "scale" in interval
    ensemble_size = int(meta.get("ensemble_size", 1))
    if ensemble_size > 1 and not calibrated:
        print(f"[predict] {path}: no calibrated interval scale stored; lower90_ah/upper90_ah use the "
              "nominal mean +- 1.645 x member std, which under-covers (see docs/intervals.md)",
              file=sys.stderr, flush=True)
    return Run(
        path=path, experiment=experiment, config=cfg, params=params,
        ensemble_size=ensemble_size,
        feature_normaliser=Normaliser.from_dict(meta["feature_normaliser"]),
        load_normaliser=Normaliser.from_dict(meta["load_normaliser"]), model=model,
        interval_scale=float(interval.get("scale", Z90)), interval_calibrated=calibrated,
        training_ranges=ranges.read(path), cell_roles=_cell_roles(path),
        data_hashes=_data_hashes(path),
    )


# ============================================================ CVAE runs: generation
CVAE_CHECKPOINT_FORMAT = "slbjax-cvae-1"


@dataclasses.dataclass
class MemberModel:
    """One CVAE member's parameters and normalisers, ready to generate.

    Attributes:
      model: the (unbatched) flax module.
      params: the member's parameters (no member axis).
      feature_lo, feature_hi: [F] feature normaliser.
      cond_lo, cond_hi: [2] (SOC, SOH) normaliser.
      latent_mean, latent_logvar: [n_train, Z] posterior of the member's training rows.
    """

    model: PulseCVAE
    params: Any
    feature_lo: np.ndarray
    feature_hi: np.ndarray
    cond_lo: np.ndarray
    cond_hi: np.ndarray
    latent_mean: np.ndarray
    latent_logvar: np.ndarray

    def decode(self, z: np.ndarray, soc: np.ndarray, soh: np.ndarray) -> np.ndarray:
        """[M, Z] latents at (SOC, SOH), each [M] -> [M, F] features in volts."""
        cond = cvae_train.minmax_apply(np.stack([soc, soh], axis=1), self.cond_lo, self.cond_hi)
        out = cvae_train.decode_rows(self.model, self.params, z, cond)
        return cvae_train.minmax_invert(out, self.feature_lo, self.feature_hi)

    def prior(self, key: jax.Array, soc: np.ndarray, soh: np.ndarray) -> np.ndarray:
        """Decodes z ~ N(0, I) at (SOC, SOH) [M]: the authors' generation; [M, F] volts."""
        z = np.asarray(jax.random.normal(key, (len(soc), self.model.latent_dim)))
        return self.decode(z, soc, soh)

    def authors_shift(
        self,
        key: jax.Array,
        base_soc: float,
        target_soc: float,
        soh: np.ndarray,
        weight_v: float,
        gain: float,
    ) -> np.ndarray:
        """Generated at ``base_soc`` then shifted by ``(target - base) * w * gain`` volts; [M, F]."""
        soc = np.full(len(soh), base_soc)
        return self.prior(key, soc, soh) + (target_soc - base_soc) * weight_v * gain

    def eq89(
        self, key: jax.Array, target_soc: float, soh: np.ndarray, t_mean: float, t_logvar: float
    ) -> np.ndarray:
        """Paper eq. 8-9: scaled posterior of random training rows, decoded at the target; [M, F]."""
        k_row, k_eps = jax.random.split(key)
        rows = np.asarray(jax.random.randint(k_row, (len(soh),), 0, self.latent_mean.shape[0]))
        mean = t_mean * self.latent_mean[rows]
        logvar = t_logvar * self.latent_logvar[rows]
        eps = np.asarray(jax.random.normal(k_eps, mean.shape))
        z = mean + np.exp(0.5 * logvar) * eps
        return self.decode(z, np.full(len(soh), target_soc), soh)


def member_model(
    model: PulseCVAE, params: Any, member: Member, features: np.ndarray, conditions: np.ndarray
) -> MemberModel:
    """A trained member as a generator.

    Args:
      model: the (unbatched) module.
      params: the member's parameters (no member axis).
      member: its normalisers.
      features, conditions: [n, F] and [n, 2] raw training rows of the member,
        whose posterior :meth:`MemberModel.eq89` samples.
    """
    x = cvae_train.minmax_apply(features, member.feature_lo, member.feature_hi)
    c = cvae_train.minmax_apply(conditions, member.cond_lo, member.cond_hi)
    mean, logvar = cvae_train.encode_rows(model, params, x, c)
    return MemberModel(model, params, member.feature_lo, member.feature_hi, member.cond_lo,
                       member.cond_hi, mean, logvar)


def cvae_checkpoint_meta(
    cfg: CvaeConfig,
    data: PulseData,
    plans: list[CasePlan],
    members: list[Member],
    member_models: list[MemberModel],
) -> dict:
    """The metadata of a CVAE checkpoint: everything :func:`generate` needs besides the parameters."""
    return {
        "format": CVAE_CHECKPOINT_FORMAT,
        "battery": data.battery,
        "source": data.source,
        "features": list(FEATURES),
        "model": dataclasses.asdict(cfg.model) | {"feature_dim": NUM_FEATURES, "condition_dim": 2},
        "generation": {
            "extrapolation": cfg.generation.extrapolation,
            "soh_source": cfg.generation.soh_source,
            "shift_gain": cfg.generation.shift_gain,
        },
        "cases": {
            str(p.case): {
                "train_soc_pct": list(p.train_soc_pct),
                "test_soc_pct": list(p.test_soc_pct),
                "extrapolation": p.extrapolation,
                "base_soc_pct": p.base_soc_pct,
                "t_mean": p.t_mean,
                "t_logvar": p.t_logvar,
                "shift_weight_v": p.shift_weight_v,
            }
            for p in plans
        },
        "members": [
            {
                "case": m.case,
                "seed_index": m.seed_index,
                "protocols": list(m.protocols),
                "feature_lo": m.feature_lo.tolist(),
                "feature_hi": m.feature_hi.tolist(),
                "cond_lo": m.cond_lo.tolist(),
                "cond_hi": m.cond_hi.tolist(),
                "latent_mean": np.round(mm.latent_mean, 7).tolist(),
                "latent_logvar": np.round(mm.latent_logvar, 7).tolist(),
            }
            for m, mm in zip(members, member_models, strict=True)
        ],
        "config": cfglib.to_dict(cfg),
    }


def _pick_case(meta: dict, soc_pct: float, case: int | None) -> int:
    cases = {int(k): v for k, v in meta["cases"].items()}
    if case is not None:
        if case not in cases:
            raise ConfigError(f"case {case} is not in this run; its cases are {sorted(cases)}")
        return case

    def distance(k):
        lo, hi = min(cases[k]["train_soc_pct"]), max(cases[k]["train_soc_pct"])
        return max(lo - soc_pct, 0.0, soc_pct - hi)

    return min(cases, key=lambda k: (distance(k), -len(cases[k]["train_soc_pct"]), k))


def _meta_members(meta: dict) -> list[dict]:
    """The members' entries of a CVAE checkpoint's metadata (``lanes`` in older runs)."""
    return meta["members"] if "members" in meta else meta["lanes"]


def _member_model(params: Any, meta: dict, idx: int) -> MemberModel:
    """Member ``idx`` of a CVAE checkpoint, ready to generate."""
    mc = meta["model"]
    model = PulseCVAE(
        feature_dim=mc["feature_dim"],
        condition_dim=mc["condition_dim"],
        embed_dim=mc["embed_dim"],
        intermediate_dim=mc["intermediate_dim"],
        latent_dim=mc["latent_dim"],
        num_heads=mc["num_heads"],
    )
    m = _meta_members(meta)[idx]
    arr = lambda name: np.asarray(m[name], np.float64)  # noqa: E731
    return MemberModel(
        model,
        member_params(params, idx),
        arr("feature_lo"),
        arr("feature_hi"),
        arr("cond_lo"),
        arr("cond_hi"),
        arr("latent_mean").reshape(-1, mc["latent_dim"]),
        arr("latent_logvar").reshape(-1, mc["latent_dim"]),
    )


def generate(
    run_dir: Path,
    soc: float,
    soh: float,
    n: int,
    out_csv: Path,
    case: int | None = None,
    seed: int = 0,
) -> Path:
    """Writes ``n`` generated U1..U21 rows at (SOC, SOH) from a finished CVAE run.

    Inside the chosen case's training SOC range the decoder is sampled with
    ``z ~ N(0, I)`` at (soc, soh); outside it the run's configured
    extrapolation (``authors_shift`` or ``eq89``) is used.  The member of seed
    index 0 and of the run's configured SOH protocol is used.

    Args:
      run_dir: a folder written by :func:`slbjax.runners.cvae.train_and_evaluate`.
      soc: SOC as a fraction (0.30 for 30 %).
      soh: SOH as a fraction.
      n: number of rows.
      out_csv: output file (columns SOC, SOH, U1..U21); must not exist.
      case: which case's model; None = the case whose training SOC range
        covers ``soc`` (or lies nearest), with the most training levels.
      seed: seed of the latent draws.

    Returns:
      ``out_csv``.

    Raises:
      RunDirError: ``out_csv`` exists, or ``run_dir`` holds no CVAE checkpoint.
      ConfigError: soc, soh, n or case out of range.
    """
    out_csv = Path(out_csv)
    if out_csv.exists():
        raise RunDirError(f"{out_csv} already exists; refusing to overwrite it (choose another -o)")
    if not 0.0 < soc <= 1.0:
        hint = f" (did you mean {soc / 100:g}? SOC is a fraction)" if 1.0 < soc <= 100.0 else ""
        raise ConfigError(f"soc must be a fraction in (0, 1], got {soc:g}{hint}")
    if not 0.0 < soh < 2.0:
        raise ConfigError(f"soh must be a fraction in (0, 2), got {soh:g}")
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    params, meta = checkpoint.load(run_dir)
    if meta.get("format") != CVAE_CHECKPOINT_FORMAT:
        raise RunDirError(
            f"{run_dir} does not hold a CVAE checkpoint (format {meta.get('format')!r})"
        )
    soc_pct = soc * 100.0
    k = _pick_case(meta, soc_pct, case)
    cinfo = meta["cases"][str(k)]
    protocol = meta["generation"]["soh_source"]
    idx = next(
        i
        for i, m in enumerate(_meta_members(meta))
        if m["case"] == k and m["seed_index"] == 0 and protocol in m["protocols"]
    )
    mm = _member_model(params, meta, idx)
    key = jax.random.key(seed)
    sohs = np.full(n, soh)
    lo, hi = min(cinfo["train_soc_pct"]), max(cinfo["train_soc_pct"])
    if lo - 1e-9 <= soc_pct <= hi + 1e-9:
        gen = mm.prior(key, np.full(n, soc), sohs)
        how = "interpolation"
    elif meta["generation"]["extrapolation"] == "eq89":
        gen = mm.eq89(key, soc, sohs, cinfo["t_mean"], cinfo["t_logvar"])
        how = "eq89 extrapolation"
    else:
        gen = mm.authors_shift(
            key,
            cinfo["base_soc_pct"] / 100.0,
            soc,
            sohs,
            cinfo["shift_weight_v"],
            meta["generation"]["shift_gain"],
        )
        how = "authors_shift extrapolation"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(out_csv, "x", newline="")
    except FileExistsError:
        raise RunDirError(f"{out_csv} already exists; refusing to overwrite it") from None
    with f:
        w = csv.writer(f)
        w.writerow(["SOC", "SOH", *FEATURES])
        for row in gen:
            w.writerow([f"{soc:.6g}", f"{soh:.6g}", *(f"{v:.6f}" for v in row)])
    print(
        f"[cvae] wrote {n} rows at SOC {soc:g}, SOH {soh:g} (case {k}, {how}) to {out_csv}",
        file=sys.stderr,
        flush=True,
    )
    return out_csv
