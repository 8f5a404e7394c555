"""Runner of second-life life prediction (``life-lsd``) and the grouping built on it.

1. Reads every cell file of ``data.subdir`` (any subset of the LSD files).
2. Builds arrival samples (:mod:`slbjax.data.life`): training arrivals every
   ``start_stride`` cycles of each record; evaluation arrival at the record's
   start (the first ``measured_cycles`` rows, what a tester records).
3. Splits the cells into ``train.folds`` folds; trains, in one program, the
   members of every fold (on the other folds' cells) and of the final model
   (on all cells), ``ensemble_size`` seeds each, each member early-stopped on
   its own share of its training cells (:mod:`slbjax.train.life`).
4. Out-of-fold scores: life MAPE, Spearman, PICP90 and interval width, before
   and after the cross-fold conformal step (:mod:`slbjax.evaluate.life`), the
   trajectory's coverage and MAPE; the same for ridge and random-forest
   baselines on the same folds, features and training arrivals.
5. SOH of the measured cycle (Wu et al. 2025): an estimator from that one
   cycle's Q-V curve and relaxation voltage (not its capacity), trained in
   the same program layout on the same folds and scored out of fold at every
   training arrival and at arrival (MAE, RMSE in % SOH), next to ridge and
   random forest on the same inputs.
6. With ``data.sorting_subdir`` present: every cell's life from its deep-sorting
   feature cycle is predicted out of fold on the same folds by a Gaussian process
   on the sorting features and by the life network on the LSD rows from that
   cycle, both with conformally calibrated spreads; the cells are grouped on
   each by the expected-lifetime and the point rule
   (:func:`~slbjax.decide.grouping.expected_partition`,
   :func:`~slbjax.decide.grouping.best_partition`), and every partition is
   scored with the sorting metrics next to the published method, its baselines
   and the oracle (``grouping.csv``); ``groups.csv`` holds the GP's expected one.
7. Clusters of the cells on the final networks' representations and on the
   raw features, compared with groups of equal true life (``clusters.csv``,
   :mod:`slbjax.evaluate.clusters`).
8. Writes ``cells.csv``, ``trajectories.csv``, ``history.csv``, the final
   members' checkpoint (life and SOH networks, with the conformal multipliers),
   ``data_report.json`` (the cells, the files' plausibility warnings, notes),
   ``training_ranges.json`` (capacity, load and arrival-feature ranges of the
   cells the final members learned from, which ``triage`` compares new cells
   with: :mod:`slbjax.data.ranges`), and returns the metrics.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
from scipy.stats import norm, spearmanr

from slbjax import checkpoint
from slbjax.config import to_dict
from slbjax.configs.life import LifeConfig
from slbjax.configs.sort import SortConfig, SortMethod
from slbjax.data import life as life_data
from slbjax.data import ranges
from slbjax.data.cells import Cell
from slbjax.data.imoe_files import find_cell_files, load_cell_file
from slbjax.data.sorting import TRAJECTORIES_FILE, SortingData, load_sorting, model_features
from slbjax.decide import grouping
from slbjax.errors import ConfigError, DataError
from slbjax.evaluate import clusters as cluster_eval
from slbjax.evaluate import life as life_eval
from slbjax.evaluate import metrics as metric_fns
from slbjax.evaluate.conformal import conformal_quantile, normalised_scores
from slbjax.models.life import LifeMLP
from slbjax.paths import require_data_dir
from slbjax.rundir import write_json
from slbjax.runners import sort as sort_runner
from slbjax.train import life as life_train

CONFIG_CLASS = LifeConfig
BASELINES = ("ridge", "forest")


def _log(msg: str) -> None:
    print(f"[life] {msg}", file=sys.stderr, flush=True)


def load_cells(folder: Path) -> list[Cell]:
    """Every cell file under ``folder``, in natural order."""
    files = find_cell_files(folder)
    _log(f"reading {len(files)} cell file(s) from {folder}")
    return [load_cell_file(f) for f in files]


def training_ranges(cells: list[Cell], train_arr: life_data.Arrivals) -> ranges.TrainingRanges:
    """Capacity and load ranges over every cycle of ``cells`` and arrival-feature ranges over
    the training arrivals (the final members learn from all cells)."""
    kinds = "+".join(sorted({c.dataset for c in cells}))
    return ranges.TrainingRanges.build(
        "life", kinds, cells,
        [{**ranges.cell_spans(c),
          **ranges.feature_spans(life_data.FEATURE_NAMES, train_arr.x[train_arr.cell == i])}
         for i, c in enumerate(cells)],
        rows="capacity and load: every cycle of the cells; features: every training arrival")


def data_report(cells: list[Cell], train_arr: life_data.Arrivals, notes: list[str]) -> dict:
    """``data_report.json``: the cells read, their plausibility warnings
    (legal but unusual values), the run's notes and the training arrivals per cell."""
    counts = np.bincount(train_arr.cell, minlength=len(cells))
    return {
        "warnings": [w for c in cells for w in c.warnings],
        "notes": list(notes),
        "cells": [c.name for c in cells],
        "training_arrivals": {c.name: int(n) for c, n in zip(cells, counts, strict=True)},
    }


def assign_folds(names: list[str], folds: int, seed: int, block: int = 1) -> np.ndarray:
    """[N] fold of each cell: a seeded permutation cut into ``folds`` near-equal parts.

    With ``block`` > 1 the units permuted are blocks of cells whose numbers (the digits
    at the end of the name, ``LSD-13`` -> 13) agree in (number - 1) // block, so a block
    is held out whole."""
    if block == 1:
        units = np.arange(len(names))
    else:
        numbers = [re.search(r"(\d+)$", name) for name in names]
        if not all(numbers):
            bad = next(n for n, m in zip(names, numbers, strict=True) if not m)
            raise ConfigError(f"train.fold_block = {block} needs numbered cells, got {bad!r}")
        units = np.unique([(int(m.group(1)) - 1) // block for m in numbers], return_inverse=True)[1]
    order = np.random.default_rng(seed).permutation(units.max() + 1)
    unit_fold = np.empty(len(order), np.int64)
    for f, part in enumerate(np.array_split(order, folds)):
        unit_fold[part] = f
    return unit_fold[units]


def member_specs(fold: np.ndarray, cfg: LifeConfig) -> list[life_train.MemberSpec]:
    """Members fold 0 .. k-1 (trained without that fold), then the final model (all cells);
    ``ensemble_size`` each, member e of a fold holding out its own random validation cells."""
    t = cfg.train
    specs = []
    for f in range(t.folds + 1):
        cells = np.flatnonzero(fold != f)  # f == folds: every cell
        for e in range(t.ensemble_size):
            rng = np.random.default_rng([t.seed, f, e])
            n_val = max(1, round(t.val_share * len(cells)))
            val = rng.choice(cells, n_val, replace=False)
            specs.append(life_train.MemberSpec(np.setdiff1d(cells, val), np.sort(val),
                                               t.seed * 1000 + f * 100 + e))
    return specs


class SortingArrivals(NamedTuple):
    """The deep-sorting files aligned with the LSD cells: ``starts[i]`` is the LSD row of
    cell i's feature cycle, ``order[i]`` its index in ``data``."""

    starts: np.ndarray
    data: SortingData
    order: np.ndarray


def _sorting_arrivals(cells: list[Cell], folder: Path) -> SortingArrivals | None:
    """None when the folder does not hold the sorting files."""
    if not (folder / TRAJECTORIES_FILE).exists():
        return None
    data = load_sorting(folder)
    if len(cells) != len(data.cells):
        raise DataError(folder, f"holds {len(data.cells)} cells but the LSD folder {len(cells)}; "
                        "the grouping compares all cells of both")
    by_number = {int(c): i for i, c in enumerate(data.cells)}
    starts, order = [], []
    for cell in cells:
        number = int(cell.name.removeprefix("LSD-")) if cell.name.startswith("LSD-") else -1
        if number not in by_number:
            raise DataError(cell.source, f"cell has no row in {folder / TRAJECTORIES_FILE}; the "
                            "grouping needs the same cells in both folders")
        order.append(by_number[number])
        c0 = int(cell.cycle[-1]) - int(data.lives[order[-1]]) + 1  # data README section 4
        starts.append(int(np.searchsorted(cell.cycle, c0)))
    return SortingArrivals(np.asarray(starts), data, np.asarray(order))


def _predict(model, params, hp, arrivals: life_data.Arrivals, rows: np.ndarray):
    """([members, rows] log remaining life, [members, rows, K] log first-passage times)."""
    log_life, shares = life_train.predict_members(model, params, hp, arrivals.x)
    log_times = log_life[..., None] + np.log(np.maximum(shares, 1e-6))
    return log_life[:, rows], log_times[:, rows]


def _out_of_fold(per_member: np.ndarray, fold: np.ndarray, cfg: LifeConfig):
    """(mean, sd) over the members of each cell's fold: per_member [members, cells, ...]."""
    e = cfg.train.ensemble_size
    mu = np.empty(per_member.shape[1:])
    sd = np.empty(per_member.shape[1:])
    for i, f in enumerate(fold):
        vals = per_member[f * e:(f + 1) * e, i]
        mu[i], sd[i] = vals.mean(0), vals.std(0, ddof=1)
    return mu, sd


def _score_method(name: str, mu, sd, truth, fold, level) -> tuple[dict, dict]:
    q = life_eval.cross_fold_scale(mu, sd, np.log(truth), fold, level)
    lo, hi = life_eval.interval(mu, sd, q)
    raw_lo, raw_hi = life_eval.uncalibrated_interval(mu, sd)
    pred = np.exp(mu)
    scores = life_eval.life_scores(pred, lo, hi, truth)
    out = {f"{name}_life_{k}": v for k, v in scores.items()}
    out[f"{name}_life_picp90_uncalibrated"] = metric_fns.coverage(raw_lo, raw_hi, truth)
    out[f"{name}_life_interval_width90_uncalibrated_cycles"] = float(np.mean(raw_hi - raw_lo))
    return out, {"pred": pred, "lower": lo, "upper": hi}


def check_inputs(cfg: LifeConfig, data_dir: Path | None) -> None:
    """Fails, before a run folder is made, when the cells are missing or do not load."""
    cfg.validate()
    load_cells(require_data_dir(data_dir, "life-lsd") / cfg.data.subdir)


def train_and_evaluate(cfg: LifeConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Cross-validates, calibrates, fits the final model, groups; returns the flat metrics."""
    cfg.validate()
    t0 = time.perf_counter()
    d, t = cfg.data, cfg.train
    root = require_data_dir(data_dir, "life-lsd")
    cells = load_cells(root / d.subdir)
    for c in cells:
        for w in c.warnings:
            _log(f"data warning: {w}")
    if len(cells) < 2 * t.folds:
        raise ConfigError(f"train.folds = {t.folds} needs at least {2 * t.folds} cells, "
                          f"{root / d.subdir} holds {len(cells)}")
    end_ah = cfg.end_ah
    starts = [life_data.training_starts(c, d.measured_cycles, end_ah, d.start_stride, d.min_remaining)
              for c in cells]
    for c, s in zip(cells, starts, strict=True):
        life_data.check_measurable(c, 0, d.measured_cycles)
        if not s or s[0] != 0:
            raise DataError(c.source, f"after its first {d.measured_cycles} cycles the capacity is "
                            f"at or below {end_ah:g} Ah or fewer than {d.min_remaining} cycles are "
                            "left (data.min_remaining); a training cell needs its life ahead")
    train_arr = life_data.build_arrivals(cells, starts, d.measured_cycles, end_ah, cfg.model.levels)
    arrival = life_data.build_arrivals(cells, [[0]] * len(cells), d.measured_cycles, end_ah,
                                       cfg.model.levels)
    sorting = _sorting_arrivals(cells, root / d.sorting_subdir)
    notes = [] if sorting is not None else [
        f"no deep-sorting files in {root / d.sorting_subdir}: the grouping on predicted lives "
        "is not scored (no grouping.csv, groups.csv)"]
    fold = assign_folds([c.name for c in cells], t.folds, t.seed, t.fold_block)
    specs = member_specs(fold, cfg)
    _log(f"{len(cells)} cells, {len(train_arr)} training arrivals; {t.folds} folds + final model, "
         f"{t.ensemble_size} members each = {len(specs)} members in one program")

    model = LifeMLP(hidden=tuple(cfg.model.hidden), levels=cfg.model.levels)
    log_life = np.log(train_arr.remaining.astype(np.float64))
    shares = train_arr.times / train_arr.remaining[:, None]
    params, hp, results = life_train.fit_members(
        model, train_arr.x, log_life, shares, train_arr.cell, specs, epochs=t.epochs,
        patience=t.patience, batch_size=t.batch_size, learning_rate=t.learning_rate,
        shape_weight=cfg.model.shape_weight, weight_decay=t.weight_decay,
        log=lambda s: _log(f"train {s}"))
    train_seconds = time.perf_counter() - t0

    # ---- out of fold, at arrival
    all_rows = np.arange(len(arrival))
    m_life, m_times = _predict(model, params, hp, arrival, all_rows)
    mu, sd = _out_of_fold(m_life, fold, cfg)
    truth = arrival.remaining.astype(np.float64)
    out, life_pred = _score_method("slbjax", mu, sd, truth, fold, t.interval_level)
    # trajectory: first-passage times of the levels, one multiplier for all levels
    mu_t, sd_t = _out_of_fold(m_times, fold, cfg)
    true_t = np.log(arrival.times.astype(np.float64))
    q_t = life_eval.cross_fold_scale(mu_t, sd_t, true_t, fold, t.interval_level)
    lo_t, hi_t = life_eval.interval(mu_t, sd_t, q_t)
    raw_lo_t, raw_hi_t = life_eval.uncalibrated_interval(mu_t, sd_t)
    out["slbjax_trajectory_picp90"] = metric_fns.coverage(lo_t, hi_t, arrival.times)
    out["slbjax_trajectory_picp90_uncalibrated"] = metric_fns.coverage(raw_lo_t, raw_hi_t, arrival.times)
    traj_rows, traj_ape = [], []
    level_cap = life_data.levels(arrival.last_capacity, end_ah, cfg.model.levels)
    for i, cell in enumerate(cells):
        last = d.measured_cycles - 1
        true_q = cell.capacity_ah[last + 1:last + 1 + arrival.remaining[i]]
        steps = len(true_q)
        pred_q = life_data.trajectory_from_times(arrival.last_capacity[i], level_cap[i],
                                                 np.exp(mu_t[i]), steps)
        low_q = life_data.trajectory_from_times(arrival.last_capacity[i], level_cap[i], lo_t[i], steps)
        high_q = life_data.trajectory_from_times(arrival.last_capacity[i], level_cap[i], hi_t[i], steps)
        traj_ape.append(metric_fns.ape_pct(pred_q, true_q))
        traj_rows.append(pd.DataFrame({
            "cell": cell.name, "cycle_after_measurement": np.arange(1, steps + 1),
            "true_capacity_ah": true_q, "predicted_capacity_ah": pred_q,
            "lower90_ah": low_q, "upper90_ah": high_q}))
    out["slbjax_trajectory_mape_pct"] = float(np.mean(np.concatenate(traj_ape)))

    # ---- baselines on the same folds, features and training arrivals
    base_pred = {}
    for kind in BASELINES:
        b_mu, b_sd = np.empty(len(cells)), np.empty(len(cells))
        for f in range(t.folds):
            rows = np.isin(train_arr.cell, np.flatnonzero(fold != f))
            fitted = life_eval.fit_baseline(kind, train_arr.x[rows], log_life[rows],
                                            train_arr.cell[rows], t.seed, t.forest_trees)
            test = fold == f
            b_mu[test], b_sd[test] = life_eval.baseline_spread(
                kind, fitted, train_arr.x[rows], log_life[rows], arrival.x[test])
        scores, base_pred[kind] = _score_method(kind, b_mu, b_sd, truth, fold, t.interval_level)
        out.update(scores)

    # ---- SOH of the measured cycle, from its Q-V curve and relaxation voltage
    e = t.ensemble_size
    final = slice(t.folds * e, (t.folds + 1) * e)
    soh = _soh_estimation(cfg, cells, train_arr, fold, specs, final)
    out.update(soh.metrics)

    # ---- the saved model: final members, multiplier from every held-out cell
    q_final = conformal_quantile(normalised_scores(mu, sd, np.log(truth)), t.interval_level)
    q_traj_final = conformal_quantile(normalised_scores(mu_t, sd_t, true_t), t.interval_level)
    final_params = jax.tree_util.tree_map(lambda a: np.asarray(a)[final], params)

    run_dir = Path(run_dir)
    table = pd.DataFrame({
        "cell": [c.name for c in cells], "fold": fold, "measured_cycle": [int(c.cycle[d.measured_cycles - 1]) for c in cells],
        "capacity_ah": arrival.last_capacity, "soh": arrival.last_capacity / d.nominal_ah,
        **{("estimated_soh" if k == "slbjax" else f"{k}_estimated_soh"): v / 100
           for k, v in soh.arrival.items()},
        "true_remaining_cycles": arrival.remaining,
        "predicted_remaining_cycles": life_pred["pred"], "lower90_cycles": life_pred["lower"],
        "upper90_cycles": life_pred["upper"],
        **{f"{k}_predicted_remaining_cycles": base_pred[k]["pred"] for k in BASELINES},
    })
    table.to_csv(run_dir / "cells.csv", index=False)
    write_json(run_dir / "data_report.json", data_report(cells, train_arr, notes))
    training_ranges(cells, train_arr).write(run_dir)
    pd.concat(traj_rows, ignore_index=True).to_csv(run_dir / "trajectories.csv", index=False)
    pd.concat([pd.DataFrame({"member": i, "epoch": np.arange(1, len(r.history["val_loss"]) + 1),
                             **r.history}) for i, r in enumerate(results)]).to_csv(
        run_dir / "history.csv", index=False)

    partitions = {}
    if sorting is not None:
        group_metrics, partitions = _grouping(cfg, model, params, hp, cells, fold, sorting, run_dir)
        out.update(group_metrics)
    final_hp = {k: np.asarray(v[final]) for k, v in hp.items() if k in life_train.STAT_KEYS}
    life_embedding = life_train.embed_members(model, final_params, final_hp, arrival.x)
    out.update(_clusters(cfg, cells, arrival, {
        "soh_net": soh.embedding, "life_net": np.concatenate(list(life_embedding), axis=1),
        "arrival_features": arrival.x, "soh_features": soh.arrival_x,
    }, partitions, run_dir))

    checkpoint.save(run_dir, int(max(r.best_epoch for r in results)),
                    {"life": final_params, "soh": soh.params}, {
        "family": "life", "config": to_dict(cfg),
        "hparams": {k: v.tolist() for k, v in final_hp.items()},
        "soh_hparams": {k: v.tolist() for k, v in soh.hparams.items()},
        "soh_feature_names": list(life_data.SOH_FEATURE_NAMES),
        "conformal_scale": q_final, "trajectory_conformal_scale": q_traj_final,
        "feature_names": list(life_data.FEATURE_NAMES),
    })
    out.update({
        "num_cells": len(cells), "num_training_arrivals": len(train_arr), "folds": t.folds,
        "ensemble_size": e, "conformal_scale_90": q_final,
        "trajectory_conformal_scale_90": q_traj_final,
        "best_epoch_median": float(np.median([r.best_epoch for r in results])),
        "train_seconds": train_seconds, "seconds": time.perf_counter() - t0,
    })
    # headline names without the method prefix
    for k in ("mape_pct", "spearman", "picp90", "interval_width90_cycles"):
        out[f"life_{k}"] = out[f"slbjax_life_{k}"]
    for k in ("mae_pct", "rmse_pct"):
        out[f"soh_{k}"] = out[f"slbjax_soh_{k}"]
    _log(f"out of fold: life MAPE {out['life_mape_pct']:.2f} %, Spearman {out['life_spearman']:.3f}, "
         f"PICP90 {out['slbjax_life_picp90_uncalibrated']:.3f} -> {out['life_picp90']:.3f}; "
         f"ridge {out['ridge_life_mape_pct']:.2f} %, forest {out['forest_life_mape_pct']:.2f} %")
    _log(f"SOH of the measured cycle, out of fold: MAE {out['soh_mae_pct']:.2f} %, RMSE "
         f"{out['soh_rmse_pct']:.2f} % SOH (ridge {out['ridge_soh_mae_pct']:.2f}, forest "
         f"{out['forest_soh_mae_pct']:.2f} % MAE)")
    return out


class SohEstimate(NamedTuple):
    """The SOH estimator's scores and what later steps use: ``arrival`` [cells] out-of-fold
    SOH (%) at arrival per method, ``arrival_x`` its inputs, ``embedding`` [cells, members * H]
    the final members' last hidden layers side by side, and the final members (params, hparams)."""

    metrics: dict[str, float]
    arrival: dict[str, np.ndarray]
    arrival_x: np.ndarray
    embedding: np.ndarray
    params: object
    hparams: dict[str, np.ndarray]


def _soh_inputs(cells: list[Cell], arr: life_data.Arrivals, measured: int, nominal_ah: float):
    """([S, 16] single-cycle inputs, [S] SOH in %) of the last measured row of every arrival."""
    rows = arr.start + measured - 1
    x = np.empty((len(arr), len(life_data.SOH_FEATURE_NAMES)))
    y = np.empty(len(arr))
    for i, cell in enumerate(cells):
        mine = np.flatnonzero(arr.cell == i)
        x[mine] = life_data.soh_features(cell, rows[mine])
        y[mine] = 100.0 * cell.capacity_ah[rows[mine]] / nominal_ah
    return x, y


def _soh_estimation(cfg: LifeConfig, cells: list[Cell], train_arr: life_data.Arrivals,
                    fold: np.ndarray, specs, final: slice) -> SohEstimate:
    """Trains the SOH members (same specs as the life members) and the baselines; scores
    them on the held-out cells of every fold: all training arrivals and the arrival itself."""
    d, t = cfg.data, cfg.train
    x, y = _soh_inputs(cells, train_arr, d.measured_cycles, d.nominal_ah)
    arrival = life_data.build_arrivals(cells, [[0]] * len(cells), d.measured_cycles, cfg.end_ah, 2)
    x_arr, y_arr = _soh_inputs(cells, arrival, d.measured_cycles, d.nominal_ah)
    net = LifeMLP(hidden=tuple(cfg.model.soh_hidden), levels=0)
    params, hp, _ = life_train.fit_members(
        net, x, y, np.zeros((len(x), 0)), train_arr.cell, specs, epochs=t.epochs,
        patience=t.patience, batch_size=t.batch_size, learning_rate=t.learning_rate,
        shape_weight=0.0, weight_decay=t.weight_decay, log=lambda s: _log(f"SOH {s}"))
    e = t.ensemble_size
    row_fold = fold[train_arr.cell]
    by_fold = lambda pm, f: pm[f * e:(f + 1) * e].mean(0)  # noqa: E731
    pm_rows = life_train.predict_members(net, params, hp, x)[0]
    pm_arr = life_train.predict_members(net, params, hp, x_arr)[0]
    pred = {"slbjax": (np.empty(len(x)), np.empty(len(cells)))}
    for kind in BASELINES:
        pred[kind] = (np.empty(len(x)), np.empty(len(cells)))
    for f in range(t.folds):
        rows, test = row_fold == f, fold == f
        pred["slbjax"][0][rows] = by_fold(pm_rows[:, rows], f)
        pred["slbjax"][1][test] = by_fold(pm_arr[:, test], f)
        for kind in BASELINES:
            fit = life_eval.fit_baseline(kind, x[~rows], y[~rows], train_arr.cell[~rows], t.seed,
                                         t.forest_trees)
            pred[kind][0][rows] = fit.predict(x[rows])
            pred[kind][1][test] = fit.predict(x_arr[test])
    out = {}
    for name, (p_rows, p_arr) in pred.items():
        out[f"{name}_soh_mae_pct"] = metric_fns.mae(p_rows, y)
        out[f"{name}_soh_rmse_pct"] = metric_fns.rmse(p_rows, y)
        out[f"{name}_soh_arrival_mae_pct"] = metric_fns.mae(p_arr, y_arr)
        out[f"{name}_soh_arrival_rmse_pct"] = metric_fns.rmse(p_arr, y_arr)
    out["soh_num_samples"] = len(x)
    final_params = jax.tree_util.tree_map(lambda a: np.asarray(a)[final], params)
    final_hp = {k: np.asarray(v[final]) for k, v in hp.items() if k in life_train.STAT_KEYS}
    hidden = life_train.embed_members(net, final_params, final_hp, x_arr)  # [e, cells, H]
    return SohEstimate(out, {k: v[1] for k, v in pred.items()}, x_arr,
                       np.concatenate(list(hidden), axis=1), final_params, final_hp)


def _clusters(cfg: LifeConfig, cells: list[Cell], arrival: life_data.Arrivals,
              representations: dict[str, np.ndarray], partitions: dict[str, np.ndarray],
              run_dir: Path) -> dict[str, float]:
    """k-means of each representation (k = ``group.num_groups``, at most cells / ``min_size``),
    scored against groups of equal true life, and against the grouping partitions."""
    g = cfg.group
    k = max(2, min(g.num_groups, len(cells) // g.min_size))
    lives = arrival.remaining.astype(np.float64)
    truth = grouping.oracle_groups(lives, k)
    table = {"cell": [c.name for c in cells], "true_remaining_cycles": arrival.remaining,
             "true_life_group": truth}
    out = {"cluster_k": k,  # the ceiling: groups cut from the true lives themselves
           "cluster_true_life_group_life_variance_explained":
               cluster_eval.life_variance_explained(truth, lives)}
    labelled = {name: cluster_eval.kmeans_labels(x, k, cfg.train.seed)
                for name, x in representations.items()}
    for name, labels in {**labelled, **partitions}.items():
        table[name] = labels
        out[f"cluster_{name}_ari_true_life"] = cluster_eval.agreement(labels, truth)
        out[f"cluster_{name}_life_variance_explained"] = cluster_eval.life_variance_explained(
            labels, lives)
    for name in labelled:
        for ref, labels in partitions.items():
            out[f"cluster_{name}_ari_{ref}"] = cluster_eval.agreement(labelled[name], labels)
    pd.DataFrame(table).to_csv(run_dir / "clusters.csv", index=False)
    _log(f"clusters (k = {k}) vs equal-true-life groups, ARI: " + ", ".join(
        f"{n} {out[f'cluster_{n}_ari_true_life']:.2f}" for n in labelled))
    return out


def _grouping(cfg, model, params, hp, cells, fold, sorting, run_dir: Path):
    """Out-of-fold lives at the sorting feature cycle from both predictors, grouped and
    scored next to the published method; returns (metrics, {partition name: [cells] labels
    in the LSD cells' order})."""
    d, g, t = cfg.data, cfg.group, cfg.train
    starts, data, order = sorting
    n = len(cells)
    data_fold = np.empty(n, np.int64)
    data_fold[order] = fold
    # the life network on the LSD rows from the feature cycle: remaining life after the
    # measured cycles, so a life in the sorting count (cycles from the feature cycle on) is
    # measured_cycles + exp(mu)
    arr = life_data.build_arrivals(cells, [[int(s)] for s in starts], d.measured_cycles, cfg.end_ah,
                                   cfg.model.levels)
    m_life, _ = _predict(model, params, hp, arr, np.arange(len(arr)))
    mu, sd = _out_of_fold(m_life, fold, cfg)
    sd = life_eval.calibrated_sd(mu, sd, np.log(arr.remaining.astype(np.float64)), fold,
                                 t.interval_level)
    net_mu, net_sd = np.empty(n), np.empty(n)
    net_mu[order], net_sd[order] = mu, sd
    # the Gaussian process on the deep-sorting features, same folds
    log_lives = np.log(data.lives.astype(np.float64))
    gp_mu, gp_sd = life_eval.gp_out_of_fold(model_features(data), log_lives, data_fold,
                                           g.gp_components, t.seed)
    gp_sd = life_eval.calibrated_sd(gp_mu, gp_sd, log_lives, data_fold, t.interval_level)
    predictors = {"network": (net_mu, net_sd, float(d.measured_cycles)),
                  "sorting_gp": (gp_mu, gp_sd, 0.0)}

    partitions, lives = {}, {}
    for name, (p_mu, p_sd, offset) in predictors.items():
        predicted = offset + np.exp(p_mu)
        lives[name] = predicted
        point = grouping.group_by_life(predicted, g.num_groups, g.group_size, g.min_size)
        partitions[f"{name}_point"] = point
        partitions[f"{name}_expected"] = point if g.group_size else grouping.expected_partition(
            p_mu, p_sd, g.num_groups, min(g.min_size, n // g.num_groups), offset, seed=t.seed)
        partitions[f"{name}_equal"] = grouping.oracle_groups(predicted, len(grouping.group_sizes(point)))
    chosen = "sorting_gp_expected"
    labels = partitions[chosen]

    scfg = SortConfig(sort=SortMethod(num_groups=len(grouping.group_sizes(labels)),
                                      num_seeds=g.reference_seeds))
    distances = grouping.aging_distances(data.trajectories, scfg.sort.pad_ah)
    at_seed, seeds, sort_labels = sort_runner.seed_tables(scfg, data)
    sort_metrics, table = sort_runner.summarise(at_seed, seeds)
    rows, out = [], {}
    for name, part in partitions.items():
        scores = sort_runner.score_partition(part, data, distances)
        for k in sort_runner.METRICS:
            ref = (sort_metrics[f"random_{k}_median"], sort_metrics[f"oracle_{k}"])
            scores[f"{k}_share_of_oracle_gain"] = grouping.share_of_oracle_gain(scores[k], *ref)
        rows.append({"method": f"slbjax_{name}", **scores})
        out.update({f"group_slbjax_{name}_{k}": v for k, v in scores.items()})
        if name == chosen:
            out.update({f"group_slbjax_{k}": v for k, v in scores.items()})
    for k in sort_runner.METRICS:
        for m in ("second_refinement", "explicit_kmeans", "random", "oracle"):
            out[f"group_{m}_{k}"] = sort_metrics[f"{m}_{k}"]
            if m != "oracle":
                out[f"group_{m}_{k}_median"] = sort_metrics[f"{m}_{k}_median"]
    z = norm.ppf(0.5 + t.interval_level / 2)
    for name, (p_mu, p_sd, offset) in predictors.items():
        out[f"group_{name}_life_spearman"] = float(spearmanr(p_mu, log_lives).statistic)
        out[f"group_{name}_life_picp90"] = metric_fns.coverage(
            offset + np.exp(p_mu - z * p_sd), offset + np.exp(p_mu + z * p_sd), data.lives)
    pd.concat([pd.DataFrame(rows), table], ignore_index=True).to_csv(run_dir / "grouping.csv", index=False)
    p_mu, p_sd, offset = predictors["sorting_gp"]
    pd.DataFrame({"cell": data.cells, "group": labels + 1, "predicted_life_cycles": lives["sorting_gp"],
                  "life_lower90": offset + np.exp(p_mu - z * p_sd),
                  "life_upper90": offset + np.exp(p_mu + z * p_sd),
                  "true_life_cycles": data.lives}).to_csv(run_dir / "groups.csv", index=False)
    out["group_num_groups"] = len(grouping.group_sizes(labels))
    _log(f"grouping (sorting-feature GP, expected lifetime): lifetime {out['group_slbjax_lifetime_cycles']:.2f} "
         f"cycles, aging difference {out['group_slbjax_aging_difference']:.2f} (published method, "
         f"seed {scfg.sort.seed}: {out['group_second_refinement_lifetime_cycles']:.2f} / "
         f"{out['group_second_refinement_aging_difference']:.2f})")
    # the partitions in the LSD cells' order, for the clusters' comparison
    return out, {"slbjax_life_groups": labels[order], "sort_deep": sort_labels[order]}
