"""Reloading finished runs: ``load_run`` and trajectory prediction for cell files.

``load_run(path)`` gives a downstream study what it needs: the resolved
config, the parameters, the normalisers and a ``predict`` function that
takes cell files (any supported published format) or :class:`Cell` objects.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from slbjax import checkpoint
from slbjax.config import from_dict
from slbjax.data.cells import Cell
from slbjax.data.features import Normaliser, physics_features, trim_soc
from slbjax.data.imoe_files import find_cell_files, load_cell_file
from slbjax.errors import DataError, RunDirError
from slbjax.models.apply import batched_apply
from slbjax.rundir import read_run_config
from slbjax.runners.imoe import ImoeConfig, build_model, ensemble_summary

PREDICT_COLUMNS = ["cell", "start_cycle", "step", "predicted_capacity_ah", "true_capacity_ah"]


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
    """

    path: Path
    experiment: str
    config: ImoeConfig
    params: Any
    ensemble_size: int
    feature_normaliser: Normaliser
    load_normaliser: Normaliser
    model: Any

    def __post_init__(self):
        self._fn = jax.jit(jax.vmap(lambda p, q, f, u: batched_apply(self.model, p, q, f, u)[0],
                                    in_axes=(0, None, None, None)))

    def predict_cells(self, cells: Iterable[Cell]) -> pd.DataFrame:
        """Trajectory from every valid cycle of each cell.

        Columns ``PREDICT_COLUMNS``; for an ensemble the prediction is the
        members' mean and ``lower90_ah`` / ``upper90_ah`` give its nominal 90 %
        interval (see :func:`slbjax.runners.imoe.ensemble_summary`).
        """
        horizon, soc = self.config.data.horizon, self.config.data.soc_start
        nfeat = self.feature_normaliser.mean.shape[0]
        frames = []
        for cell in cells:
            x = cell_inputs(cell, horizon, soc)
            if x["features"].shape[1] != nfeat:
                raise DataError(
                    cell.source,
                    f"the run {self.path} was trained with {nfeat} physics features but this "
                    f"{cell.dataset} cell gives {x['features'].shape[1]} "
                    "(TPSL files have no relaxation data: 6 features instead of 12)",
                )
            if len(x["start_row"]) == 0:
                continue
            feats = self.feature_normaliser.apply(x["features"]).astype(np.float32)
            load = self.load_normaliser.apply(x["load"]).astype(np.float32)
            members = []
            for s in range(0, len(feats), 4096):
                y = self._fn(self.params, x["qv"][s:s + 4096].astype(np.float32),
                             feats[s:s + 4096], load[s:s + 4096])
                members.append(np.asarray(y, dtype=np.float64))
            ens = ensemble_summary(np.concatenate(members, 1))
            n = ens["mean"].shape[0]
            frame = pd.DataFrame({
                "cell": cell.name,
                "start_cycle": np.repeat(x["start_cycle"], horizon),
                "step": np.tile(np.arange(horizon), n),
                "predicted_capacity_ah": ens["mean"].reshape(-1),
                "true_capacity_ah": x["truth"].reshape(-1),
            })
            if self.ensemble_size > 1:
                frame["lower90_ah"] = ens["lower"].reshape(-1)
                frame["upper90_ah"] = ens["upper"].reshape(-1)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=PREDICT_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def predict(self, path: str | os.PathLike) -> pd.DataFrame:
        """Predicts for every cell file under ``path`` (a file or a folder)."""
        files = find_cell_files(path)
        return self.predict_cells(load_cell_file(f) for f in files)


def load_run(path: str | os.PathLike) -> Run:
    """Reloads config, parameters and normalisers of an iMOE run folder.

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
    return Run(
        path=path, experiment=experiment, config=cfg, params=params,
        ensemble_size=int(meta.get("ensemble_size", 1)),
        feature_normaliser=Normaliser.from_dict(meta["feature_normaliser"]),
        load_normaliser=Normaliser.from_dict(meta["load_normaliser"]), model=model,
    )
