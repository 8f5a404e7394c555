"""A finished ``life-lsd`` run, reloaded to predict new cells.

:func:`load_life_run` restores the final members (trained on every cell of
the run), their standardisation and the conformal multipliers; :meth:`LifeRun.predict`
turns arrival measurements (the first ``data.measured_cycles`` rows of each
cell file) into the remaining life with its calibrated interval and the
trajectory with its band.  :meth:`LifeRun.range_warning` compares a cell's
measured rows with the run's training ranges (``training_ranges.json``,
:mod:`slbjax.data.ranges`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax import checkpoint
from slbjax.config import from_dict
from slbjax.configs.life import LifeConfig
from slbjax.data import life as life_data
from slbjax.data import ranges
from slbjax.data.cells import Cell
from slbjax.errors import RunDirError
from slbjax.evaluate.life import interval
from slbjax.models.life import LifeMLP
from slbjax.rundir import read_run_config
from slbjax.train.life import predict_members

MAX_TRAJECTORY_STEPS = 100_000
"""Cycles after the measured ones up to which a trajectory is drawn (the life itself is not cut)."""


@dataclasses.dataclass(frozen=True)
class CellPrediction:
    """One cell's prediction.

    Attributes:
      cell: name; measured_cycle: cycle number of the last measured row;
      capacity_ah: its capacity; remaining, lower, upper: remaining life (cycles
      after ``measured_cycle``) and its calibrated interval; trajectory, lower_ah,
      upper_ah: [steps] predicted capacity after ``measured_cycle`` with its band
      (until the upper bound's life, at most :data:`MAX_TRAJECTORY_STEPS`); truth:
      the file's own capacities after the measured rows (may be empty); true_remaining: the file's remaining life when
      the record reaches the end of life, else None; estimated_soh: the SOH (share
      of the rating) the estimator reads from the last measured cycle's Q-V curve
      and relaxation voltage.
    """

    cell: str
    source: str
    measured_cycle: int
    capacity_ah: float
    remaining: float
    lower: float
    upper: float
    trajectory: np.ndarray
    lower_ah: np.ndarray
    upper_ah: np.ndarray
    truth: np.ndarray
    true_remaining: int | None
    estimated_soh: float


@dataclasses.dataclass(frozen=True)
class LifeRun:
    path: Path
    config: LifeConfig
    params: object
    hparams: dict
    conformal_scale: float
    trajectory_conformal_scale: float
    soh_params: object
    soh_hparams: dict
    training_ranges: ranges.TrainingRanges | None = None
    """None for runs written before training ranges were recorded (no range check)."""

    def observed(self, cell: Cell) -> dict[str, tuple[float, float] | None]:
        """What the model reads of ``cell``: capacity and load of its measured rows and its
        arrival features."""
        m = self.config.data.measured_cycles
        x = life_data.arrival_features(cell, 0, m)
        return {**ranges.cell_spans(cell, slice(0, m)),
                **ranges.feature_spans(life_data.FEATURE_NAMES, x[None, :])}

    def range_warning(self, cell: Cell, where: str) -> str | None:
        """One line naming what of ``cell`` lies outside the training ranges, or None (also
        for a run without ranges)."""
        if self.training_ranges is None:
            return None
        return self.training_ranges.warning(where, self.observed(cell))

    @property
    def model(self) -> LifeMLP:
        return LifeMLP(hidden=tuple(self.config.model.hidden), levels=self.config.model.levels)

    @property
    def soh_model(self) -> LifeMLP:
        return LifeMLP(hidden=tuple(self.config.model.soh_hidden), levels=0)

    def estimate_soh(self, cells: list[Cell]) -> np.ndarray:
        """[cells] SOH (share of the rating) of the last measured row of every cell."""
        rows = [self.config.data.measured_cycles - 1]
        x = np.concatenate([life_data.soh_features(c, rows) for c in cells])
        soh_pct = predict_members(self.soh_model, self.soh_params, self.soh_hparams, x)[0]
        return soh_pct.mean(0) / 100.0

    def predict(self, cells: list[Cell]) -> list[CellPrediction]:
        """Predictions from the first ``data.measured_cycles`` rows of every cell."""
        d = self.config.data
        m, end_ah, k = d.measured_cycles, self.config.end_ah, self.config.model.levels
        x = np.stack([life_data.arrival_features(c, 0, m) for c in cells])
        log_life, shares = predict_members(self.model, self.params, self.hparams, x)
        log_times = log_life[..., None] + np.log(np.maximum(shares, 1e-6))
        mu, sd = log_life.mean(0), log_life.std(0, ddof=1)
        mu_t, sd_t = log_times.mean(0), log_times.std(0, ddof=1)
        lo, hi = interval(mu, sd, self.conformal_scale)
        lo_t, hi_t = interval(mu_t, sd_t, self.trajectory_conformal_scale)
        soh = self.estimate_soh(cells)
        out = []
        for i, c in enumerate(cells):
            c_last = float(c.capacity_ah[m - 1])
            lev = life_data.levels(np.array([c_last]), end_ah, k)[0]
            # a cell far outside the training data can get an absurd life (1e11 cycles for a
            # UL cell on an LSD run): its trajectory is drawn for at most MAX_TRAJECTORY_STEPS
            end = float(hi_t[i, -1])
            steps = int(np.ceil(end)) if np.isfinite(end) and end < MAX_TRAJECTORY_STEPS \
                else MAX_TRAJECTORY_STEPS
            truth = c.capacity_ah[m:]
            reaches = bool(truth.size) and bool((truth <= end_ah).any())
            out.append(CellPrediction(
                cell=c.name, source=c.source, measured_cycle=int(c.cycle[m - 1]), capacity_ah=c_last,
                remaining=float(np.exp(mu[i])), lower=float(lo[i]), upper=float(hi[i]),
                trajectory=life_data.trajectory_from_times(c_last, lev, np.exp(mu_t[i]), steps),
                # a lower capacity band is the trajectory that reaches each level soonest
                lower_ah=life_data.trajectory_from_times(c_last, lev, lo_t[i], steps),
                upper_ah=life_data.trajectory_from_times(c_last, lev, hi_t[i], steps),
                truth=truth,
                true_remaining=life_data.cell_targets(c, 0, m, end_ah, 2)[0] if reaches else None,
                estimated_soh=float(soh[i]),
            ))
        return out


def load_life_run(path: str | os.PathLike) -> LifeRun:
    """Reloads a finished ``life-lsd`` run folder.

    Raises:
      RunDirError: the folder does not hold a finished life run.
    """
    path = Path(path)
    _, cfg_dict = read_run_config(path)
    if cfg_dict.get("__class__") != LifeConfig.__name__:
        raise RunDirError(f"{path} holds a {cfg_dict.get('__class__')} run, not a life-lsd run")
    params, meta = checkpoint.load(path)
    if meta.get("family") != "life":
        raise RunDirError(f"{path}: checkpoint of family {meta.get('family')!r}, expected 'life'")
    if not isinstance(params, dict) or set(params) != {"life", "soh"} or "soh_hparams" not in meta:
        raise RunDirError(f"{path}: the checkpoint holds no SOH estimator (a life run older than "
                          "the estimator); train it again with slbjax run life-lsd")
    cfg = from_dict(LifeConfig, meta["config"])
    stats = lambda d: {k: np.asarray(v, np.float32) for k, v in d.items()}  # noqa: E731
    return LifeRun(path, cfg, params["life"], stats(meta["hparams"]), float(meta["conformal_scale"]),
                   float(meta["trajectory_conformal_scale"]), params["soh"], stats(meta["soh_hparams"]),
                   ranges.read(path))


def prediction_table(preds: list[CellPrediction], nominal_ah: float) -> pd.DataFrame:
    """``cell, measured_cycle, capacity_ah, soh, predicted_life_cycles, life_lower90, life_upper90,
    estimated_soh, true_life_cycles`` (NaN where the file does not reach the end of life).
    ``soh`` is the measured capacity over the rating, ``estimated_soh`` the estimator's."""
    return pd.DataFrame({
        "cell": [p.cell for p in preds],
        "measured_cycle": [p.measured_cycle for p in preds],
        "capacity_ah": [p.capacity_ah for p in preds],
        "soh": [p.capacity_ah / nominal_ah for p in preds],
        "predicted_life_cycles": [p.remaining for p in preds],
        "life_lower90": [p.lower for p in preds],
        "life_upper90": [p.upper for p in preds],
        "estimated_soh": [p.estimated_soh for p in preds],
        "true_life_cycles": [p.true_remaining if p.true_remaining is not None else np.nan
                             for p in preds],
    })
