"""iMOE runs: config, data -> windows -> training -> evaluation -> run folder.

Writes into the run folder (besides ``config.json`` / ``metrics.json`` written
by the CLI): ``per_cell_metrics.csv``, ``predictions.csv`` (test cells),
``history.csv`` (per-epoch losses), ``data_report.json`` (windows per cell,
too-short cells, what the data can and cannot evaluate) and the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from slbjax import checkpoint
from slbjax.config import to_dict
from slbjax.data.cells import Cell
from slbjax.data.features import Normaliser
from slbjax.data.imoe_files import load_split
from slbjax.data.synthetic import cohort_split, generate_cohort
from slbjax.data.windows import Windows, build_windows
from slbjax.errors import ConfigError, DataError
from slbjax.evaluate import metrics
from slbjax.models.baselines import Informer, PatchTST
from slbjax.models.imoe import IMOE
from slbjax.paths import require_data_dir
from slbjax.rundir import write_json
from slbjax.train.imoe import (
    Batch,
    LossWeights,
    data_mesh,
    fit_members,
    predict_members,
    stack_members,
)


@dataclasses.dataclass(frozen=True)
class ImoeData:
    """Which cells, and how samples are cut from them.

    Attributes:
      dataset: ``synthetic`` (built-in cohort), ``UL``, ``LSD`` or ``TPSL``.
      subset: UL: ``NCA``, ``NCM``, ``NCMNCA``; TPSL: ``Fixed``, ``Arbitrary``.
      condition: UL cycling condition, e.g. ``CY25-05_1``.
      soc_start: random initial SOC of the partial charge (20, 30, 40, 50 %).
      horizon: L, future cycles predicted per sample.
      max_windows_per_cell: cap on samples per cell (0: no cap; the authors
        use the first 19 for TPSL).
      skip_first: leading rows never used as a start (the authors skip row 0 for LSD).
      train_fraction: share of the training cells used (the paper's Fig. 5b data
        access); the subset is drawn once by ``fraction_seed``, independently of
        ``train.seed``, so every seed of a run sees the same cells and the
        normalisers are fitted on exactly those cells.
      fraction_seed: seed of that subset.
      synthetic_cells, synthetic_seed: size and seed of the built-in cohort.
    """

    dataset: Literal["synthetic", "UL", "LSD", "TPSL"] = "synthetic"
    subset: str = "NCA"
    condition: str = "CY25-05_1"
    soc_start: int = 20
    horizon: int = 50
    max_windows_per_cell: int = 0
    skip_first: int = 0
    train_fraction: float = 1.0
    fraction_seed: int = 0
    synthetic_cells: int = 160
    synthetic_seed: int = 0


@dataclasses.dataclass(frozen=True)
class ImoeModel:
    """See :class:`slbjax.models.imoe.IMOE`.

    ``arch`` picks the trajectory model trained on the same inputs, splits and
    early-stopping rule: ``imoe``, or the baselines ``patchtst`` / ``informer``
    (:mod:`slbjax.models.baselines`, the authors' settings: d_model 64, 2
    encoder layers, d_ff 64, dropout 0.2, patch 2); ``router="linear"`` is
    the iMOE-linear ablation and ``use_load=false`` the iMOE-woFO ablation.

    ``target_scaling``: the head's output is affinely scaled by the mean and
    standard deviation of the training capacities (the published code
    predicts raw Ah from a zero-centred output, which takes thousands of
    epochs to drift to ~3 Ah).
    ``load_scaling``: the future load is standardised per channel with
    training statistics before the LSTM (the published code feeds raw
    currents and temperatures of 25-45 degC, which saturate the LSTM gates).
    """

    arch: Literal["imoe", "patchtst", "informer"] = "imoe"
    num_experts: int = 5
    top_k: int = 2
    gate: Literal["authors", "topk_softmax"] = "authors"
    gate_alpha: float = 10.0
    hidden: int = 64
    bidirectional: bool = True
    router: Literal["moe", "linear"] = "moe"
    use_load: bool = True
    target_scaling: bool = True
    load_scaling: bool = True


@dataclasses.dataclass(frozen=True)
class ImoeTrain:
    """Optimisation.  Defaults: the paper's Adam, lr 1e-4, batch 32, and
    loss weights alpha 0.75 (trajectory MSE), beta 0.25 (router CV^2 loss).
    Early stopping and the best checkpoint use the validation trajectory MSE only.
    ``ensemble_size`` N > 1 trains N members (seeds seed .. seed+N-1) in one
    vmapped program; predictions are the members' mean with a 90 % interval.
    ``data_parallel`` shards each minibatch over all devices (the batch size
    must divide by the device count), parameters replicated.
    """

    epochs: int = 3000
    batch_size: int = 32
    learning_rate: float = 1e-4
    patience: int = 500
    seed: int = 0
    ensemble_size: int = 1
    data_parallel: bool = False
    mse_weight: float = 0.75
    router_loss_weight: float = 0.25
    router_loss_eps: float = 1e-10
    chunk: int = 10


@dataclasses.dataclass(frozen=True)
class ImoeConfig:
    family: ClassVar[str] = "imoe"
    data: ImoeData = ImoeData()
    model: ImoeModel = ImoeModel()
    train: ImoeTrain = ImoeTrain()

    def validate(self) -> None:
        d, m, t = self.data, self.model, self.train
        checks = [
            (d.soc_start in (20, 30, 40, 50), f"data.soc_start must be 20, 30, 40 or 50, got {d.soc_start}"),
            (d.horizon >= 1, f"data.horizon must be >= 1, got {d.horizon}"),
            (d.max_windows_per_cell >= 0, "data.max_windows_per_cell must be >= 0"),
            (0.0 < d.train_fraction <= 1.0, f"data.train_fraction must be in (0, 1], got {d.train_fraction}"),
            (d.synthetic_cells >= 10, "data.synthetic_cells must be >= 10"),
            (m.num_experts >= 1, f"model.num_experts must be >= 1, got {m.num_experts}"),
            (1 <= m.top_k <= m.num_experts,
             f"model.top_k must be between 1 and model.num_experts ({m.num_experts}), got {m.top_k}"),
            (m.hidden >= 1, "model.hidden must be >= 1"),
            (t.epochs >= 1 and t.batch_size >= 1 and t.patience >= 1,
             "train.epochs, train.batch_size and train.patience must be >= 1"),
            (t.learning_rate > 0, "train.learning_rate must be > 0"),
            (t.ensemble_size >= 1, "train.ensemble_size must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if t.data_parallel:
            data_mesh(t.batch_size)  # raises ConfigError if the batch does not divide


CONFIG_CLASS = ImoeConfig


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Splits:
    train: list[Cell]
    val: list[Cell]
    test: list[Cell]
    notes: list[str]


def load_cells(cfg: ImoeConfig, data_dir: Path | None) -> Splits:
    """The cells of each role, for any dataset."""
    d = cfg.data
    if d.dataset == "synthetic":
        cells = generate_cohort(d.synthetic_cells, d.synthetic_seed, min_cycles=d.horizon + 20)
        train, val, test = cohort_split(cells)
        splits = Splits(train, val, test, [f"synthetic cohort: {len(cells)} cells, seed {d.synthetic_seed}"])
    else:
        root = require_data_dir(data_dir, f"dataset {d.dataset}")
        split = load_split(root, d.dataset, d.subset, d.condition)
        notes = []
        if split.missing:
            notes.append(
                f"{d.dataset}-{d.subset}: {len(split.missing)} files of the reference split are not in "
                f"{root} ({', '.join(split.missing[:6])}{' ...' if len(split.missing) > 6 else ''})"
            )
        splits = Splits(split.train, split.val, split.test, notes)
    return subset_training_cells(splits, d.train_fraction, d.fraction_seed)


def subset_training_cells(splits: Splits, fraction: float, seed: int) -> Splits:
    """Keeps ``round(fraction * n)`` (at least one) of the n training cells, drawn by ``seed``."""
    n = len(splits.train)
    if fraction >= 1.0 or n == 0:
        return splits
    k = max(1, int(round(fraction * n)))
    keep = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    train = [splits.train[i] for i in keep]
    note = (f"data access: {k} of {n} training cells ({fraction:.0%}, fraction_seed {seed}): "
            f"{', '.join(c.name for c in train)}")
    return Splits(train, splits.val, splits.test, [*splits.notes, note])


def windows_for(cfg: ImoeConfig, cells: list[Cell]) -> Windows | None:
    if not cells:
        return None
    d = cfg.data
    return build_windows(
        cells, d.horizon, d.soc_start, max_windows_per_cell=d.max_windows_per_cell or None,
        skip_first=d.skip_first,
    )


def fit_load_normaliser(w: Windows, enabled: bool) -> Normaliser:
    """Per-channel standardisation of the load (identity when disabled)."""
    if not enabled:
        return Normaliser(mean=np.zeros(3), std=np.ones(3))
    return Normaliser.fit(w.load.reshape(-1, 3))


def to_batch(w: Windows, norm: Normaliser, load_norm: Normaliser) -> Batch:
    return Batch(
        qv=w.qv.astype(np.float32),
        features=norm.apply(w.features).astype(np.float32),
        load=load_norm.apply(w.load).astype(np.float32),
        target=w.target.astype(np.float32),
    )


@dataclasses.dataclass
class Prepared:
    """What a run fits on its training windows: normalisers, target scaling, batches."""

    norm: Normaliser
    load_norm: Normaliser
    t_mean: float
    t_std: float
    batches: dict[str, Batch]  # by role, for the roles that have windows


def prepare(cfg: ImoeConfig, wins: dict[str, Windows | None]) -> Prepared:
    """Fits the normalisers (and the output scaling) on ``wins["train"]`` and batches every role."""
    norm = Normaliser.fit(wins["train"].features)
    load_norm = fit_load_normaliser(wins["train"], cfg.model.load_scaling)
    batches = {role: to_batch(w, norm, load_norm) for role, w in wins.items() if _has(w)}
    tr = batches["train"]
    t_mean, t_std = (float(tr.target.mean()), float(tr.target.std())) if cfg.model.target_scaling else (0.0, 1.0)
    return Prepared(norm, load_norm, t_mean, t_std, batches)


def training_batches(cfg: ImoeConfig, data_dir: Path | None):
    """(model, train batch, validation batch) of a config, exactly as a run builds them.

    For benchmarks and notebooks that want the arrays a run trains on without
    running it.
    """
    splits = load_cells(cfg, data_dir)
    p = prepare(cfg, {role: windows_for(cfg, getattr(splits, role)) for role in ("train", "val")})
    return build_model(cfg, p.t_mean, p.t_std), p.batches["train"], p.batches["val"]


# ----------------------------------------------------------------------------- model


def build_model(cfg: ImoeConfig, target_mean: float = 0.0, target_std: float = 1.0):
    """The trajectory model of ``cfg.model.arch`` with the given output scaling."""
    m = cfg.model
    if m.arch == "patchtst":
        return PatchTST(horizon=cfg.data.horizon, target_mean=target_mean, target_std=target_std)
    if m.arch == "informer":
        return Informer(horizon=cfg.data.horizon, target_mean=target_mean, target_std=target_std)
    return IMOE(
        num_experts=m.num_experts, top_k=m.top_k, horizon=cfg.data.horizon, gate=m.gate,
        gate_alpha=m.gate_alpha, hidden=m.hidden, bidirectional=m.bidirectional,
        router=m.router, use_load=m.use_load, target_mean=target_mean, target_std=target_std,
    )


def _has(w: Windows | None) -> bool:
    return w is not None and len(w) > 0


# ----------------------------------------------------------------------------- run


BATCHABLE = ("train.seed", "train.learning_rate", "train.mse_weight", "train.router_loss_weight")
"""Keys whose values share one compiled program: they become per-member traced values."""


def shape_signature(cfg: ImoeConfig) -> str:
    """Configs with equal signatures differ only in :data:`BATCHABLE` keys."""
    t = dataclasses.replace(cfg.train, seed=0, learning_rate=1.0, mse_weight=0.0, router_loss_weight=0.0)
    return json.dumps(to_dict(dataclasses.replace(cfg, train=t)), sort_keys=True)


def run(cfg: ImoeConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Trains and evaluates one iMOE model (or ensemble); returns the flat metrics."""
    return run_group([cfg], data_dir, [run_dir])[0]


def run_group(cfgs: list[ImoeConfig], data_dir: Path | None, run_dirs: list[Path]) -> list[dict[str, float]]:
    """Trains several configs that differ only in :data:`BATCHABLE` keys in ONE program.

    Each config's members (``train.ensemble_size`` of them) are stacked with
    every other config's on the member axis of :func:`fit_members`; each
    config then gets its own ordinary run folder (metrics, predictions,
    checkpoint of its own members).  ``train_seconds`` is the whole group's.
    """
    if len({shape_signature(c) for c in cfgs}) != 1:
        raise ConfigError("run_group needs configs that differ only in " + ", ".join(BATCHABLE))
    for c in cfgs:
        c.validate()
    cfg = cfgs[0]
    d = cfg.data
    _log(f"[data] loading {d.dataset} {d.subset if d.dataset in ('UL', 'TPSL') else ''} "
         f"{d.condition if d.dataset == 'UL' else ''}".rstrip())
    splits = load_cells(cfg, data_dir)
    wins = {role: windows_for(cfg, getattr(splits, role)) for role in ("train", "val", "test")}
    report = {
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
    if not _has(wins["train"]):
        write_json(run_dirs[0] / "data_report.json", report)
        raise DataError(
            run_dirs[0] / "data_report.json",
            f"no training sample: every training cell is shorter than horizon+1 = {d.horizon + 1} "
            "cycles or missing; lower data.horizon",
        )
    if not _has(wins["val"]):
        report["notes"].append(
            "no validation sample: early stopping and best-checkpoint choice are impossible; "
            "the parameters after train.epochs epochs are kept"
        )
    if not _has(wins["test"]):
        report["notes"].append("no test sample: test metrics are not computed (null)")
    for note in report["notes"]:
        _log(f"[data] {note}")

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
        weights=weights, chunk=t.chunk,
        mesh=data_mesh(t.batch_size) if t.data_parallel else None,
        log=lambda s: _log(f"[train] {s}"),
    )
    if val is None:
        report["notes"].append("best epoch chosen on training MSE (no validation cells)")
    return [
        _evaluate_and_write(
            c, rd, model, batches, wins, [r for r, o in zip(all_results, owner, strict=True) if o == i],
            report, norm, load_norm, t_mean, t_std,
        )
        for i, (c, rd) in enumerate(zip(cfgs, run_dirs, strict=True))
    ]


def _evaluate_and_write(cfg, run_dir, model, batches, wins, results, report, norm, load_norm,
                        t_mean, t_std) -> dict[str, float]:
    """Evaluates one config's members and writes its run folder; returns its metrics."""
    params = stack_members([r.params for r in results])
    out: dict[str, float] = {
        "train_seconds": results[0].seconds,
        "seconds_per_epoch": results[0].seconds_per_epoch,
        "epochs_run": max(r.epochs_run for r in results),
        "best_epoch": results[0].best_epoch,
        "best_val_mse": results[0].best_val if "val" in batches else float("nan"),
        "ensemble_size": len(results),
    }
    per_cell_rows = []
    for role in ("train", "val", "test"):
        if role not in batches:
            out.update({f"{role}_mape_pct": float("nan"), f"{role}_rmse_ah": float("nan"),
                        f"{role}_r2": float("nan"), f"{role}_windows": 0})
            continue
        member_pred, gates = predict_members(model, params, batches[role])  # [N, M, L], [N, M, E]
        w = wins[role]
        ens = ensemble_summary(member_pred)
        m = metrics.trajectory_metrics(ens["mean"], w.target)
        out.update({f"{role}_mape_pct": m["mape_pct"], f"{role}_rmse_ah": m["rmse_ah"],
                    f"{role}_r2": m["r2"], f"{role}_windows": len(w)})
        if len(results) > 1:
            member_mapes = [metrics.mape_pct(p, w.target) for p in member_pred]
            out.update({f"member{i}_{role}_mape_pct": v for i, v in enumerate(member_mapes)})
            out[f"member_mean_{role}_mape_pct"] = float(np.mean(member_mapes))
            out[f"ensemble_{role}_mape_pct"] = m["mape_pct"]
            out[f"{role}_picp90"] = metrics.coverage(ens["lower"], ens["upper"], w.target)
            out[f"{role}_interval_width90_ah"] = float(np.mean(ens["upper"] - ens["lower"]))
        for ci, name in enumerate(w.cell_names):
            sel = w.cell_index == ci
            if sel.any():
                mc = metrics.trajectory_metrics(ens["mean"][sel], w.target[sel])
                per_cell_rows.append({"role": role, "cell": name, "windows": int(sel.sum()), **mc})
        if role == "test":
            prediction_table(w, ens).to_csv(run_dir / "predictions.csv", index=False)
            g = gates.mean(0)
            pd.DataFrame(g, columns=[f"w{e}" for e in range(g.shape[1])]).assign(
                cell=[w.cell_names[i] for i in w.cell_index], start_cycle=w.start_cycle
            ).to_csv(run_dir / "router_weights.csv", index=False)
    if len(results) > 1 and "test" in batches:
        out["ensemble_test_mape_pct"] = out["test_mape_pct"]
        out["picp90"] = out["test_picp90"]
        out["interval_width90_ah"] = out["test_interval_width90_ah"]
    pd.DataFrame(per_cell_rows).to_csv(run_dir / "per_cell_metrics.csv", index=False)
    hist = pd.concat([
        pd.DataFrame({"member": i, "epoch": np.arange(1, len(r.history["val_mse"]) + 1), **r.history})
        for i, r in enumerate(results)
    ])
    hist.to_csv(run_dir / "history.csv", index=False)
    write_json(run_dir / "data_report.json", report)
    checkpoint.save(
        run_dir, results[0].best_epoch, params,
        {
            "family": "imoe",
            "config": to_dict(cfg),
            "ensemble_size": len(results),
            "feature_normaliser": norm.to_dict(),
            "load_normaliser": load_norm.to_dict(),
            "target_mean": t_mean,
            "target_std": t_std,
            "num_features": int(batches["train"].features.shape[1]),
        },
    )
    _log(f"[eval] test MAPE {out['test_mape_pct']:.3f} %  RMSE {out['test_rmse_ah']:.4f} Ah  "
         f"R2 {out['test_r2']:.4f}  ({results[0].seconds:.1f} s training)")
    return out


Z90 = 1.6448536269514722  # standard-normal quantile of 0.95


def ensemble_summary(member_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and nominal-90 % interval over members.

    The interval is mean +- 1.645 x the members' standard deviation (a normal
    approximation: with a handful of members, empirical 5/95 % quantiles would
    be the min and max).  A single member has a zero-width interval.

    Args:
      member_pred: [N, M, L] predictions of N members.

    Returns:
      ``mean``, ``lower``, ``upper``: [M, L].
    """
    mean = member_pred.mean(0)
    std = member_pred.std(0, ddof=1) if member_pred.shape[0] > 1 else np.zeros_like(mean)
    return {"mean": mean, "lower": mean - Z90 * std, "upper": mean + Z90 * std}


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
