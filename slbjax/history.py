"""Fig. 5a's history-available baselines, scored as the authors' notebooks score them.

Unlike iMOE, these forecasters are given the measured capacity of the cycles
before the prediction start, which a retired cell without its record does not
have.  Both work on each cell's discharge capacity per recorded cycle (the
rows of the published file, in Ah) and on the UL-NCA split of
:func:`slbjax.data.imoe_files.split_files` (the MLP notebook's split too).

* **Polynomial** (``IMOE/PolynomialFeatures.ipynb`` of the authors'
  repository): every window of a cell, step 1: a degree-3 least-squares fit
  of the previous 50 capacities in the cycle number, extrapolated over the
  next 50; MAPE per cell over all its windows.  Nothing is trained, so there
  are no seeds; the group's number is the mean over its test cells and the
  spread is over those cells.  The per-cell values equal the notebook's
  printed output (``tests/test_history.py``).
* **MLP** (``IMOE/Mlp-history.ipynb``): :class:`~slbjax.models.baselines.HistoryMLP`
  from 10 past capacities to the next 100 (128 and 64 ReLU units, dropout
  0.2), raw Ah in and out, MSE, Adam 1e-4, shuffled batches of 64, 500
  epochs, the learning rate halved after 100 epochs without a validation
  improvement (PyTorch's ``ReduceLROnPlateau`` defaults otherwise), the
  best-validation weights kept; test MAPE over all predicted points of the
  test cells' windows.  The seeds are members of one vmapped program.

:func:`run_history_baselines` runs both for the report and keeps each result
in an ordinary run folder (``config.json``, ``metrics.json``, ``per_cell.csv``)
that a later report reuses when its config is unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from slbjax import rundir
from slbjax.configs.history import HistoryConfig, HistoryData, HistoryMlp, HistoryPolynomial
from slbjax.data.cells import Cell
from slbjax.data.imoe_files import load_split
from slbjax.evaluate.metrics import ape_pct, mape_pct, rmse
from slbjax.models.baselines import HistoryMLP, history_windows, poly_forecast
from slbjax.train import loop


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cell_windows(cells: list[Cell], history: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(past [M, H], future [M, L], cell index [M]) over ``cells``, every start (step 1)."""
    parts = [history_windows(c.capacity_ah, history, horizon) for c in cells]
    past = np.concatenate([p for p, _ in parts]) if parts else np.zeros((0, history))
    future = np.concatenate([f for _, f in parts]) if parts else np.zeros((0, horizon))
    index = np.concatenate([np.full(len(p), i) for i, (p, _) in enumerate(parts)]) if parts else np.zeros(0, int)
    return past, future, index


def poly_scores(cells: list[Cell], s: HistoryPolynomial = HistoryPolynomial()) -> pd.DataFrame:
    """Per cell: number of windows, MAPE (%) and RMSE (Ah) of the polynomial forecast.

    Cells too short for one window get 0 windows and NaN scores (the notebook
    skips them with an error message).
    """
    rows = []
    for c in cells:
        past, future = history_windows(c.capacity_ah, s.history, s.horizon)
        if len(past) == 0:
            rows.append({"cell": c.name, "windows": 0, "mape_pct": np.nan, "rmse_ah": np.nan})
            continue
        forecast = poly_forecast(past, s.horizon, s.degree)
        rows.append({"cell": c.name, "windows": len(past),
                     "mape_pct": mape_pct(forecast, future), "rmse_ah": rmse(forecast, future)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- MLP


@dataclasses.dataclass
class MLPResult:
    """Trained members: ``params`` stacked on a leading axis of len(seeds)."""

    model: HistoryMLP
    params: object
    best_epoch: np.ndarray  # 1-based
    best_val_mse: np.ndarray
    final_learning_rate: np.ndarray


def _batched_mse(err: jax.Array, batch_size: int) -> jax.Array:
    """Mean over batches of each batch's mean, as a PyTorch loop over a DataLoader sums it."""
    n = err.shape[0]
    steps = math.ceil(n / batch_size)
    pad = steps * batch_size - n
    e = jnp.concatenate([err, jnp.zeros(pad, err.dtype)]).reshape(steps, batch_size)
    m = (jnp.arange(steps * batch_size) < n).reshape(steps, batch_size)
    return jnp.mean(e.sum(1) / m.sum(1).astype(e.dtype))


@functools.lru_cache(maxsize=8)
def mlp_task(model: HistoryMLP, num_train: int, batch_size: int) -> loop.Task:
    """The history MLP's training task (see the module doc); data: ``(past, future)`` rows."""
    steps, cut = loop.shuffled_batches(num_train, batch_size)

    def predict(params, x, key=None):
        if key is None:
            return jax.vmap(lambda xi: model.apply(params, xi))(x)
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda xi, k: model.apply(params, xi, train=True, rngs={"dropout": k}))(x, keys)

    def loss(params, batch, mask, rng, hp):
        x, y = batch
        err = jnp.mean((predict(params, x, rng) - y) ** 2, axis=-1)
        return jnp.sum(err * mask) / jnp.sum(mask), {}

    def plan(rng, epoch, hp):
        rng, k_perm, k_drop = jax.random.split(rng, 3)
        idx, mask = cut(jax.random.permutation(k_perm, num_train))
        return rng, idx, mask, jax.random.split(k_drop, steps)

    def validate(params, data, hp):
        x, y = data.val
        return _batched_mse(jnp.mean((predict(params, x) - y) ** 2, axis=-1), batch_size)

    return loop.Task(init=lambda key, data: model.init(key, data.train[0][0]), loss=loss, plan=plan,
                     optimizer=optax.adam, validate=validate, val_name="mse")


def fit_mlp(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
            seeds: list[int], s: HistoryMlp = HistoryMlp()) -> MLPResult:
    """Trains one HistoryMLP per seed, all members of one program (see the module doc)."""
    model = HistoryMLP(horizon=s.horizon, hidden=s.hidden, dropout=s.dropout)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    n, n_val = len(train[0]), len(val[0])
    if n == 0 or n_val == 0:
        raise ValueError(f"history MLP needs training and validation windows, got {n} and {n_val}")
    keys = jax.vmap(lambda seed: jnp.stack(jax.random.split(jax.random.key(seed))))(jnp.asarray(seeds))
    members = loop.Members(keys[:, 0], keys[:, 1], np.full(len(seeds), s.learning_rate, np.float32))
    results = loop.fit(
        mlp_task(model, n, s.batch_size),
        loop.Data((f32(train[0]), f32(train[1])), (f32(val[0]), f32(val[1]))),
        members, epochs=s.epochs,
        plateau=loop.Plateau(s.plateau_patience, s.plateau_factor, s.plateau_threshold),
        log=lambda msg: None,
    )
    return MLPResult(model, loop.stack_members([r.params for r in results]),
                     np.asarray([r.best_epoch for r in results]),
                     np.asarray([r.best_val for r in results]),
                     np.asarray([r.learning_rate for r in results]))


def mlp_member_predictions(result: MLPResult, past: np.ndarray) -> np.ndarray:
    """[members, M, L] forecasts of every member for the windows ``past`` [M, H]."""
    x = jnp.asarray(past, jnp.float32)
    f = jax.jit(jax.vmap(lambda p: jax.vmap(lambda xi: result.model.apply(p, xi))(x)))
    return np.asarray(f(result.params), np.float64)


# ----------------------------------------------------------------------------- report


def run_history_baselines(conditions: list[str], data_dir: Path, root: Path, *, seeds: int,
                          mlp: HistoryMlp = HistoryMlp(),
                          poly: HistoryPolynomial = HistoryPolynomial()) -> list[dict]:
    """Scores both baselines on the UL-NCA ``conditions``; returns report result rows.

    Each (baseline, condition) is an ordinary run (:class:`HistoryConfig`) in
    ``history/<baseline>-<condition>`` under ``root``, executed (or reused when
    finished with the same config) by :func:`slbjax.rundir.execute`.  Rows:
    table ``fig5a``, group ``UL-NCA <condition>``, model ``polynomial`` (one
    row, the mean over the test cells) or ``mlp`` (one row per seed).
    """
    points = [
        rundir.RunPoint("history", HistoryConfig(baseline=name, ensemble_size=1 if name == "polynomial" else seeds,
                                                 data=HistoryData(cond), polynomial=poly, mlp=mlp),
                        root / "history" / f"{name}-{cond}")
        for cond in conditions for name in ("polynomial", "mlp")
    ]
    metrics, reused = rundir.execute(points, data_dir, log=lambda m: _log(f"history: {m}"))
    rows = []
    for p, m in zip(points, metrics, strict=True):
        base = {"table": "fig5a", "group": f"UL-NCA {p.cfg.data.condition}", "model": p.cfg.baseline,
                "x_key": "", "x": "", "experiment": "history", "overrides": "",
                "run": str(p.run_dir.relative_to(root))}
        if p.cfg.baseline == "polynomial":
            rows.append({**base, "seed": 0, "test_mape_pct": m["test_mape_pct"],
                         "test_rmse_ah": m["test_rmse_ah"], "test_cells_scored": m["test_cells_scored"]})
        else:
            rows += [{**base, "seed": k, "test_mape_pct": m[f"seed{k}_test_mape_pct"],
                      "test_rmse_ah": m[f"seed{k}_test_rmse_ah"]} for k in range(seeds)]
    _log(f"history: {len(points)} baseline result(s), {sum(reused)} reused, "
         f"{len(points) - sum(reused)} computed")
    return rows


def score(cfg: HistoryConfig, data_dir: Path, run_dir: Path) -> dict:
    """Scores one baseline on its condition's test cells; writes ``per_cell.csv``; returns the metrics."""
    split = load_split(data_dir, "UL", "NCA", cfg.data.condition)
    _log(f"history: {cfg.baseline} on UL-NCA {cfg.data.condition}")
    if cfg.baseline == "polynomial":
        return _poly_run(split, cfg.polynomial, run_dir)
    return _mlp_run(split, cfg.mlp, cfg.ensemble_size, run_dir)


def _poly_run(split, s: HistoryPolynomial, folder: Path) -> dict:
    table = poly_scores(split.test, s)
    scored = table.dropna()
    metrics = {"test_mape_pct": float(scored.mape_pct.mean()) if len(scored) else None,
               "test_mape_cell_std_pct": float(scored.mape_pct.std(ddof=1)) if len(scored) > 1 else None,
               "test_rmse_ah": float(scored.rmse_ah.mean()) if len(scored) else None,
               "test_cells_scored": len(scored), "test_windows": int(table.windows.sum())}
    table.to_csv(folder / "per_cell.csv", index=False)
    return metrics


def _mlp_run(split, s: HistoryMlp, seeds: int, folder: Path) -> dict:
    data = {role: cell_windows(split[role], s.history, s.horizon) for role in ("train", "val", "test")}
    past, future, index = data["test"]
    if min(len(data[r][0]) for r in data) == 0:
        metrics = {f"seed{k}_{m}": None for k in range(seeds) for m in ("test_mape_pct", "test_rmse_ah")}
        pd.DataFrame({"cell": [c.name for c in split.test]}).to_csv(folder / "per_cell.csv", index=False)
        return {**metrics, "test_windows": len(past)}
    result = fit_mlp(data["train"][:2], data["val"][:2], list(range(seeds)), s)
    pred = mlp_member_predictions(result, past)
    ape = ape_pct(pred, future)  # [members, M, L]
    metrics = {"test_windows": len(past), "train_windows": len(data["train"][0])}
    per_cell = []
    for k in range(seeds):
        metrics[f"seed{k}_test_mape_pct"] = float(ape[k].mean())
        metrics[f"seed{k}_test_rmse_ah"] = rmse(pred[k], future)
        metrics[f"seed{k}_best_epoch"] = int(result.best_epoch[k])
        metrics[f"seed{k}_final_learning_rate"] = float(result.final_learning_rate[k])
        for i, c in enumerate(split.test):
            sel = index == i
            per_cell.append({"seed": k, "cell": c.name, "windows": int(sel.sum()),
                             "mape_pct": float(ape[k][sel].mean()) if sel.any() else np.nan})
    pd.DataFrame(per_cell).to_csv(folder / "per_cell.csv", index=False)
    return metrics
