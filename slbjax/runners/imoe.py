"""iMOE runs: config, data -> windows -> training -> evaluation -> run folder.

Writes into the run folder (besides ``config.json`` / ``metrics.json`` written
by the CLI): ``per_cell_metrics.csv``, ``predictions.csv`` (test cells),
``history.csv`` (per-epoch losses), ``router_weights.csv`` (test samples, one row per
member and sample: ``member, cell, start_cycle, soh_start, w0 ..``), ``data_report.json`` (windows per cell,
too-short cells, what the data can and cannot evaluate), ``training_ranges.json`` (capacity,
load and feature ranges of the training cells, which ``predict`` compares new cells with:
:mod:`slbjax.data.ranges`) and the checkpoint.

Ensembles (``train.ensemble_size`` > 1) get a 90 % interval ``mean +- q *
std`` over members whose multiplier ``q`` is calibrated by split conformal
prediction on the validation cells (:func:`calibrate_interval`,
docs/intervals.md); the nominal ``q = 1.645`` is reported beside it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax import checkpoint
from slbjax.config import to_dict
from slbjax.configs.imoe import ImoeConfig
from slbjax.data import ranges
from slbjax.data.cells import Cell
from slbjax.data.imoe_files import check_split_files
from slbjax.data.imoe_inputs import (
    has_windows,
    load_cells,
    nominal_capacity_ah,
    prepare,
    windows_for,
)
from slbjax.data.windows import Windows
from slbjax.errors import ConfigError, DataError
from slbjax.evaluate import metrics
from slbjax.evaluate.conformal import (
    ensemble_spread,
    min_calibration_size,
    scaled_interval,
)
from slbjax.evaluate.intervals import INTERVAL_LEVEL, Z90, calibrate_interval
from slbjax.evaluate.routing import router_weights_table
from slbjax.models.trajectory import build_model
from slbjax.paths import require_data_dir
from slbjax.rundir import write_json
from slbjax.train.imoe import (
    LossWeights,
    data_mesh,
    fit_members,
    predict_members,
    stack_members,
)
from slbjax.train.loop import Plateau

CONFIG_CLASS = ImoeConfig


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- run


BATCHABLE = ("train.seed", "train.learning_rate", "train.mse_weight", "train.router_loss_weight")
"""Keys whose values share one compiled program: they become per-member traced values."""


def shape_signature(cfg: ImoeConfig) -> str:
    """Configs with equal signatures differ only in :data:`BATCHABLE` keys."""
    t = dataclasses.replace(cfg.train, seed=0, learning_rate=1.0, mse_weight=0.0, router_loss_weight=0.0)
    return json.dumps(to_dict(dataclasses.replace(cfg, train=t)), sort_keys=True)


def trained_on(cfg: ImoeConfig) -> str:
    """The training data as a warning names them: ``UL-NCA CY25-05_1``, ``LSD``, ``TPSL-Fixed``."""
    d = cfg.data
    if d.dataset == "UL":
        return f"UL-{d.subset} {d.condition}"
    return f"TPSL-{d.subset}" if d.dataset == "TPSL" else d.dataset


def training_ranges(cfg: ImoeConfig, cells: list[Cell]) -> ranges.TrainingRanges:
    """Capacity, load and physics-feature ranges of the training cells, over every row a
    prediction can start from (all rows for capacity and load)."""
    soc = cfg.data.soc_start
    return ranges.TrainingRanges.build(
        "imoe", trained_on(cfg), cells,
        [ranges.imoe_observed(c, ranges.start_features(c, soc)) for c in cells],
        rows="capacity and load: every cycle of the training cells; features: every valid "
             "cycle of them (each a possible prediction start)")


def check_inputs(cfg: ImoeConfig, data_dir: Path | None) -> None:
    """Fails, before a run folder is made, when the data the config names are not there
    or do not pass the loaders' checks."""
    cfg.validate()
    d = cfg.data
    if d.dataset != "synthetic":
        check_split_files(require_data_dir(data_dir, f"dataset {d.dataset}"), d.dataset, d.subset,
                          d.condition)
        load_cells(cfg, data_dir)


def train_and_evaluate(cfg: ImoeConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Trains and evaluates one iMOE model (or ensemble); returns the flat metrics."""
    return train_and_evaluate_group([cfg], data_dir, [run_dir])[0]


def train_and_evaluate_group(cfgs: list[ImoeConfig], data_dir: Path | None,
                             run_dirs: list[Path]) -> list[dict[str, float]]:
    """Trains several configs that differ only in :data:`BATCHABLE` keys in ONE program.

    Each config's members (``train.ensemble_size`` of them) are stacked with
    every other config's on the member axis of :func:`fit_members`; each
    config then gets its own ordinary run folder (metrics, predictions,
    checkpoint of its own members).  ``train_seconds`` is the whole group's.
    """
    if len({shape_signature(c) for c in cfgs}) != 1:
        raise ConfigError("train_and_evaluate_group needs configs that differ only in " + ", ".join(BATCHABLE))
    for c in cfgs:
        c.validate()
    cfg = cfgs[0]
    d = cfg.data
    _log(f"[data] loading {d.dataset} {d.subset if d.dataset in ('UL', 'TPSL') else ''} "
         f"{d.condition if d.dataset == 'UL' else ''}".rstrip())
    splits = load_cells(cfg, data_dir)
    wins = {role: windows_for(cfg, getattr(splits, role)) for role in ("train", "val", "test")}
    for w in splits.warnings:
        _log(f"[data] warning: {w}")
    report = {
        "warnings": splits.warnings,
        "notes": list(splits.notes),
        "cells": {role: [c.name for c in getattr(splits, role)] for role in wins},
        "windows": {role: (w.report if w is not None else {}) for role, w in wins.items()},
    }
    for role, w in wins.items():
        if w is not None and w.too_short:
            report["notes"].append(
                f"{role}: cells shorter than horizon+1 = {d.horizon + 1} cycles give no sample: "
                f"{', '.join(w.too_short)}"
            )
    if not has_windows(wins["train"]):
        write_json(run_dirs[0] / "data_report.json", report)
        raise DataError(
            run_dirs[0] / "data_report.json",
            f"no training sample: every training cell is shorter than horizon+1 = {d.horizon + 1} "
            "cycles or missing; lower data.horizon",
        )
    if not has_windows(wins["val"]):
        report["notes"].append(
            "no validation sample: early stopping and best-checkpoint choice are impossible; "
            "the parameters after train.epochs epochs are kept"
        )
    if not has_windows(wins["test"]):
        report["notes"].append("no test sample: test metrics are not computed (null)")
    for note in report["notes"]:
        _log(f"[data] {note}")

    train_ranges = training_ranges(cfg, splits.train)
    prep = prepare(cfg, wins)
    norm, load_norm, batches = prep.norm, prep.load_norm, prep.batches
    t_mean, t_std = prep.t_mean, prep.t_std
    tr = batches["train"]
    model = build_model(cfg, t_mean, t_std)
    _log(f"[train] {tr.size} train / {batches['val'].size if 'val' in batches else 0} val / "
         f"{batches['test'].size if 'test' in batches else 0} test windows; "
         f"{int(np.ceil(tr.size / cfg.train.batch_size))} steps per epoch; "
         f"{len(cfgs) * cfg.train.ensemble_size} member(s) in one program")

    t = cfg.train
    val = batches.get("val")
    owner, seeds, lrs, weights = [], [], [], []
    for i, c in enumerate(cfgs):
        for e in range(c.train.ensemble_size):
            owner.append(i)
            seeds.append(c.train.seed + e)
            lrs.append(c.train.learning_rate)
            weights.append(LossWeights(c.train.mse_weight, c.train.router_loss_weight, t.router_loss_eps))
    all_results = fit_members(
        model, tr, val if val is not None else tr, seeds=seeds, epochs=t.epochs,
        batch_size=t.batch_size, learning_rate=lrs,
        patience=t.patience if val is not None else t.epochs + 1,
        weights=weights, chunk=t.chunk, select_on=t.select_on,
        plateau=(Plateau(t.plateau_patience, t.plateau_factor)
                 if t.plateau_patience > 0 and val is not None else None),
        member_group=t.member_group,
        mesh=data_mesh(t.batch_size) if t.data_parallel else None,
        log=lambda s: _log(f"[train] {s}"),
    )
    if val is None:
        report["notes"].append("best epoch chosen on training MSE (no validation cells)")
    return [
        _evaluate_and_write(
            c, rd, model, batches, wins, [r for r, o in zip(all_results, owner, strict=True) if o == i],
            report, norm, load_norm, t_mean, t_std, train_ranges,
        )
        for i, (c, rd) in enumerate(zip(cfgs, run_dirs, strict=True))
    ]


def _evaluate_and_write(cfg, run_dir, model, batches, wins, results, report, norm, load_norm,
                        t_mean, t_std, train_ranges: ranges.TrainingRanges) -> dict[str, float]:
    """Evaluates one config's members and writes its run folder; returns its metrics."""
    params = stack_members([r.params for r in results])
    report = {**report, "notes": list(report["notes"])}  # this run's copy (a group shares one)
    out: dict[str, float] = {
        "train_seconds": results[0].seconds,
        "seconds_per_epoch": results[0].seconds_per_epoch,
        "epochs_run": max(r.epochs_run for r in results),
        "best_epoch": results[0].best_epoch,
        f"best_val_{cfg.train.select_on}": results[0].best_val if "val" in batches else float("nan"),
        "ensemble_size": len(results),
    }
    ensemble = len(results) > 1
    if ensemble:
        out.update({f"member{i}_best_epoch": r.best_epoch for i, r in enumerate(results)})
        out.update({f"member{i}_epochs_run": r.epochs_run for i, r in enumerate(results)})
    preds = {role: predict_members(model, params, batches[role]) for role in ("train", "val", "test")
             if role in batches}  # [N, M, L], [N, M, E]
    cal = calibrate_interval(preds["val"][0] if "val" in preds else None, wins["val"]) if ensemble else None
    if cal is not None:
        out["conformal_scale_90"] = cal.pooled
        out["conformal_scale_90_cell"] = cal.cell
        out["conformal_val_cells"] = cal.cells
        out["conformal_val_points"] = cal.points
        report["intervals"] = {**cal.meta(), "nominal_scale": Z90, "cell_level_scale": cal.cell,
                               "note": cal.note}
        if np.isinf(cal.cell):
            report["intervals"]["cell_level_note"] = (
                f"infinite (null): {cal.cells} validation cells, the cell-level rank needs at least "
                f"{min_calibration_size(INTERVAL_LEVEL)}")
        if cal.note:
            report["notes"].append(cal.note)
            _log(f"[eval] {cal.note}")
        else:
            _log(f"[eval] 90 % interval: conformal q = {cal.pooled:.3f} on {cal.points} points of "
                 f"{cal.cells} validation cells (nominal 1.645; cell-level q = {cal.cell:.3f})")
    per_cell_rows = []
    for role in ("train", "val", "test"):
        if role not in batches:
            out.update({f"{role}_mape_pct": float("nan"), f"{role}_rmse_ah": float("nan"),
                        f"{role}_r2": float("nan"), f"{role}_windows": 0})
            continue
        member_pred, gates = preds[role]
        w = wins[role]
        mean, std = ensemble_spread(member_pred)
        lower, upper = scaled_interval(mean, std, cal.scale if cal else Z90)
        ens = {"mean": mean, "lower": lower, "upper": upper}
        m = metrics.trajectory_metrics(mean, w.target)
        out.update({f"{role}_mape_pct": m["mape_pct"], f"{role}_rmse_ah": m["rmse_ah"],
                    f"{role}_r2": m["r2"], f"{role}_windows": len(w)})
        if ensemble:
            nom_lower, nom_upper = scaled_interval(mean, std, Z90)
            member_mapes = [metrics.mape_pct(p, w.target) for p in member_pred]
            out.update({f"member{i}_{role}_mape_pct": v for i, v in enumerate(member_mapes)})
            out[f"member_mean_{role}_mape_pct"] = float(np.mean(member_mapes))
            out[f"ensemble_{role}_mape_pct"] = m["mape_pct"]
            out[f"{role}_picp90"] = metrics.coverage(lower, upper, w.target)
            out[f"{role}_interval_width90_ah"] = float(np.mean(upper - lower))
            out[f"{role}_picp90_uncalibrated"] = metrics.coverage(nom_lower, nom_upper, w.target)
            out[f"{role}_interval_width90_uncalibrated_ah"] = float(np.mean(nom_upper - nom_lower))
        for ci, name in enumerate(w.cell_names):
            sel = w.cell_index == ci
            if sel.any():
                mc = metrics.trajectory_metrics(mean[sel], w.target[sel])
                row = {"role": role, "cell": name, "windows": int(sel.sum()), **mc}
                if ensemble:
                    row["picp90"] = metrics.coverage(lower[sel], upper[sel], w.target[sel])
                    row["picp90_uncalibrated"] = metrics.coverage(nom_lower[sel], nom_upper[sel], w.target[sel])
                per_cell_rows.append(row)
        if role == "test":
            prediction_table(w, ens).to_csv(run_dir / "predictions.csv", index=False)
            router_weights_table(w, gates, nominal_capacity_ah(cfg)).to_csv(
                run_dir / "router_weights.csv", index=False)
    if ensemble and "test" in batches:
        out["ensemble_test_mape_pct"] = out["test_mape_pct"]
        out["picp90"] = out["test_picp90"]
        out["interval_width90_ah"] = out["test_interval_width90_ah"]
        out["picp90_uncalibrated"] = out["test_picp90_uncalibrated"]
        out["interval_width90_uncalibrated_ah"] = out["test_interval_width90_uncalibrated_ah"]
    pd.DataFrame(per_cell_rows).to_csv(run_dir / "per_cell_metrics.csv", index=False)
    hist = pd.concat([
        pd.DataFrame({"member": i, "epoch": np.arange(1, len(r.history["train_loss"]) + 1), **r.history})
        for i, r in enumerate(results)
    ])
    hist.to_csv(run_dir / "history.csv", index=False)
    write_json(run_dir / "data_report.json", report)
    train_ranges.write(run_dir)
    meta = {
        "family": "imoe",
        "config": to_dict(cfg),
        "ensemble_size": len(results),
        "feature_normaliser": norm.to_dict(),
        "load_normaliser": load_norm.to_dict(),
        "target_mean": t_mean,
        "target_std": t_std,
        "num_features": int(batches["train"].features.shape[1]),
    }
    if cal is not None:
        meta["interval90"] = cal.meta()
    checkpoint.save(run_dir, results[0].best_epoch, params, meta)
    _log(f"[eval] test MAPE {out['test_mape_pct']:.3f} %  RMSE {out['test_rmse_ah']:.4f} Ah  "
         f"R2 {out['test_r2']:.4f}  ({results[0].seconds:.1f} s training)")
    if ensemble and "test" in batches:
        _log(f"[eval] test PICP90 {out['picp90']:.3f} (width {out['interval_width90_ah']:.4f} Ah); "
             f"uncalibrated {out['picp90_uncalibrated']:.3f} (width "
             f"{out['interval_width90_uncalibrated_ah']:.4f} Ah)")
    return out


def prediction_table(w: Windows, ens: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table: cell, start_cycle, step, predicted_capacity_ah, true_capacity_ah
    (+ lower90_ah, upper90_ah when the interval has width)."""
    pred = ens["mean"]
    m, horizon = pred.shape
    table = pd.DataFrame({
        "cell": np.repeat(np.asarray(w.cell_names, dtype=object)[w.cell_index], horizon),
        "start_cycle": np.repeat(w.start_cycle, horizon),
        "step": np.tile(np.arange(horizon), m),
        "predicted_capacity_ah": pred.reshape(-1),
        "true_capacity_ah": np.asarray(w.target, dtype=np.float64).reshape(-1),
    })
    if np.any(ens["upper"] > ens["lower"]):
        table["lower90_ah"] = ens["lower"].reshape(-1)
        table["upper90_ah"] = ens["upper"].reshape(-1)
    return table
