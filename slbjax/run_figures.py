"""Figures of one finished run: PNG files beside the tables they are drawn from.

:func:`draw_run_figures` reads what a run wrote in its folder and draws what
applies to its family; every run gets them when it finishes
(:func:`slbjax.rundir.execute`), and they are recorded in the run marker like
the run's other files.

==================  ==========================================================
iMOE-like runs      ``trajectories.png``: a few test cells, measured capacity
(iMOE, ablations,   and predicted trajectories from several start cycles, with
PatchTST,           the 90 % interval of an ensemble; ``parity.png``: predicted
Informer)           vs true capacity of every test point; ``per_cell_mape.png``:
                    MAPE per cell (train / val / test), error bars over the
                    members of an ensemble or over a cell's windows
history baselines   ``per_cell_mape.png`` (error bars over seeds)
life runs           ``trajectories.png`` (capacity after the measurement, 90 %
                    band), ``parity.png`` (remaining life with its interval),
                    ``per_cell_mape.png`` (capacity trajectory MAPE per cell)
CVAE runs           ``per_case_mape.png``: SOH MAPE per case, measured vs
                    generated features (error bars over seeds)
sort runs           ``methods.png``: each grouping method's scores, 5-95 %
                    over seeds
==================  ==========================================================

A figure whose inputs are missing or unusable is skipped, never an error.
Figures use matplotlib's object API with the Agg renderer (no pyplot, so the
caller's backend is left alone), fixed sizes and a fixed subsample, so the
same tables give the same images.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax.evaluate.intervals import Z90

DPI = 110
MAX_PANELS = 6  # cells shown in a trajectory figure
MAX_STARTS = 3  # predicted trajectories per cell
MAX_POINTS = 20000  # scattered in a parity plot
ROLE_COLORS = {"train": "0.65", "val": "C1", "test": "C0"}
FAMILIES = {"ImoeConfig": "imoe", "CvaeConfig": "cvae", "LifeConfig": "life", "SortConfig": "sort",
            "HistoryConfig": "history"}
SWITCH = "SLBJAX_FIGURES"  # set to 0 to draw no figures
IMOE_COLUMNS = ("cell", "start_cycle", "step", "predicted_capacity_ah", "true_capacity_ah")


class _Run:
    """The folder's tables and JSON files, each read once; None / {} where unreadable."""

    def __init__(self, path: Path):
        self.path = path
        self._cache: dict[str, object] = {}

    def table(self, name: str, columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
        if name not in self._cache:
            try:
                self._cache[name] = pd.read_csv(self.path / name)
            except Exception:
                self._cache[name] = None
        t = self._cache[name]
        if t is None or t.empty or not set(columns) <= set(t.columns):
            return None
        return t

    def json(self, name: str) -> dict:
        if name not in self._cache:
            try:
                data = json.loads((self.path / name).read_text())
            except Exception:
                data = None
            self._cache[name] = data if isinstance(data, dict) else {}
        return self._cache[name]  # type: ignore[return-value]

    def metric(self, key: str) -> float | None:
        v = self.json("metrics.json").get(key)
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else None

    @property
    def family(self) -> str | None:
        cls = self.json("config.json").get("config", {})
        return FAMILIES.get(cls.get("__class__")) if isinstance(cls, dict) else None


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig, path: Path) -> None:
    """Writes the PNG under a temporary name and moves it into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _grid(n: int, width: float, height: float, title: str):
    """A figure of ``n`` panels (at most three a row), the unused ones hidden."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(width * cols, height * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig, axes[:n]


def _spread_pick(values: pd.Series, k: int) -> list:
    """``k`` index labels of ``values`` from smallest to largest, evenly over the ranks."""
    order = values.sort_values(kind="mergesort")
    if len(order) <= k:
        return list(order.index)
    ranks = np.unique(np.linspace(0, len(order) - 1, k).round().astype(int))
    return list(order.index[ranks])


def _cell_mape(table: pd.DataFrame, pred: str, true: str) -> pd.Series:
    ape = (table[pred] - table[true]).abs() / table[true].abs() * 100.0
    return ape.groupby(table["cell"], sort=False).mean().dropna()


def _ticks(ax, size: int = 7) -> None:
    ax.tick_params(labelsize=size)


# ----------------------------------------------------------------------------- iMOE-like runs


def _member_scale(run: _Run) -> float | None:
    """The multiplier ``q`` of the ensemble's interval ``mean +- q * std`` (None: unknown)."""
    q = run.json("data_report.json").get("intervals", {})
    q = q.get("scale") if isinstance(q, dict) else None
    if not isinstance(q, int | float):
        q = run.metric("conformal_scale_90") or Z90
    return float(q) if math.isfinite(q) and q > 0 else None


def _members(run: _Run) -> int:
    n = run.metric("ensemble_size")
    return int(n) if n else 1


def _starts(windows: pd.DataFrame) -> list[int]:
    """Up to ``MAX_STARTS`` start cycles spread over the cell, at least a third of the horizon
    apart so that their bands do not cover each other."""
    starts = np.sort(windows.start_cycle.unique())
    horizon = int(windows.step.max()) + 1
    picks = np.unique(np.linspace(0, len(starts) - 1, min(MAX_STARTS, len(starts))).round().astype(int))
    chosen: list[int] = []
    for s in starts[picks]:
        if not chosen or s - chosen[-1] >= horizon / 3:
            chosen.append(int(s))
    return chosen


def imoe_trajectories(run: _Run):
    pred = run.table("predictions.csv", IMOE_COLUMNS)
    if pred is None:
        return None
    band = {"lower90_ah", "upper90_ah"} <= set(pred.columns)
    per_cell = _cell_mape(pred, "predicted_capacity_ah", "true_capacity_ah")
    cells = _spread_pick(per_cell, MAX_PANELS)
    if not cells:
        return None
    members = _members(run)
    q = _member_scale(run) if band else None
    what = (f"mean of {members} members" if members > 1 else "one model") + (
        f"\n90 % interval: mean ± {q:.3g} × member std" if q else ", 90 % interval" if band else "")
    shown = (f"{len(cells)} of {len(per_cell)} test cells, lowest to highest MAPE"
             if len(per_cell) > len(cells) else "test cells")
    fig, axes = _grid(len(cells), 3.3, 2.5, f"{shown}: measured (black) and predicted, {what}")
    for ax, cell in zip(axes, cells, strict=True):
        t = pred[pred.cell == cell]
        cycle = t.start_cycle + t.step
        truth = t.true_capacity_ah.groupby(cycle).first().sort_index()
        ax.plot(truth.index, truth.to_numpy(), "k-", lw=1.0, label="measured")
        for j, s in enumerate(_starts(t)):
            w = t[t.start_cycle == s].sort_values("step")
            x = (s + w.step).to_numpy()
            ax.plot(x, w.predicted_capacity_ah.to_numpy(), color=f"C{j}", lw=1.2,
                    label=f"from cycle {s}")
            if band:
                ax.fill_between(x, w.lower90_ah.to_numpy(), w.upper90_ah.to_numpy(), color=f"C{j}",
                                alpha=0.2, lw=0)
        ax.set_title(f"{cell}: MAPE {per_cell[cell]:.2f} %", fontsize=8)
        ax.set_xlabel("cycle", fontsize=7)
        ax.set_ylabel("capacity (Ah)", fontsize=7)
        ax.legend(fontsize=6, loc="best")
        _ticks(ax)
    return fig


def imoe_parity(run: _Run):
    pred = run.table("predictions.csv", IMOE_COLUMNS)
    if pred is None:
        return None
    pred = pred[np.isfinite(pred.true_capacity_ah) & np.isfinite(pred.predicted_capacity_ah)]
    if pred.empty:
        return None
    shown = pred.sample(MAX_POINTS, random_state=0) if len(pred) > MAX_POINTS else pred
    fig = _figure(4.2, 4.2)
    ax = fig.subplots()
    cells = list(dict.fromkeys(shown.cell))
    if len(cells) <= 10:
        for j, c in enumerate(cells):
            s = shown[shown.cell == c]
            ax.scatter(s.true_capacity_ah, s.predicted_capacity_ah, s=4, alpha=0.4, lw=0,
                       color=f"C{j}", label=str(c))
        ax.legend(fontsize=6, markerscale=2, loc="upper left", title="test cell", title_fontsize=6)
    else:
        ax.scatter(shown.true_capacity_ah, shown.predicted_capacity_ah, s=3, alpha=0.3, lw=0)
    _diagonal(ax, shown.true_capacity_ah, shown.predicted_capacity_ah)
    ax.set_xlabel("true capacity (Ah)", fontsize=8)
    ax.set_ylabel("predicted capacity (Ah)", fontsize=8)
    scores = [f"{name} {v:{fmt}}{unit}" for name, key, fmt, unit in (
        ("MAPE", "test_mape_pct", ".2f", " %"), ("RMSE", "test_rmse_ah", ".3f", " Ah"),
        ("R²", "test_r2", ".2f", "")) if (v := run.metric(key)) is not None]
    sub = f", {len(shown)} of {len(pred)} shown" if len(shown) < len(pred) else ""
    ax.set_title(f"test points ({len(pred)}{sub})\n" + ", ".join(scores), fontsize=8)
    _ticks(ax)
    return fig


def _diagonal(ax, true, pred) -> None:
    lo = float(min(np.min(true), np.min(pred)))
    hi = float(max(np.max(true), np.max(pred)))
    pad = 0.03 * (hi - lo or abs(hi) or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label=None)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.ticklabel_format(useOffset=False, style="plain")


def _bars(ax, names, values, errors, colors, error_label: str | None) -> None:
    x = np.arange(len(names))
    ax.bar(x, values, color=colors, width=0.8)
    ok = np.isfinite(errors)
    if ok.any():
        ax.errorbar(x[ok], np.asarray(values)[ok], yerr=np.asarray(errors)[ok], fmt="none",
                    ecolor="k", elinewidth=0.8, capsize=2, label=error_label)
    size = 7 if len(names) <= 20 else 5
    ax.set_xticks(x, [str(n) for n in names], rotation=90, fontsize=size)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.tick_params(axis="y", labelsize=7)


def _bar_width(n: int) -> float:
    return min(16.0, max(4.5, 1.2 + 0.22 * n))


def imoe_per_cell(run: _Run):
    from matplotlib.patches import Patch

    table = run.table("per_cell_metrics.csv", ("role", "cell", "mape_pct"))
    if table is None:
        return None
    order = {r: i for i, r in enumerate(ROLE_COLORS)}
    table = table.assign(_o=table.role.map(order).fillna(len(order))).sort_values(
        ["_o"], kind="mergesort")
    errors = np.full(len(table), np.nan)
    error_label = None
    pred = run.table("predictions.csv", IMOE_COLUMNS)
    members = _members(run)
    if pred is not None:
        if members > 1 and {"lower90_ah", "upper90_ah"} <= set(pred.columns) and _member_scale(run):
            # the interval is mean +- q * std over members: std back in % of the true capacity
            std = (pred.upper90_ah - pred.lower90_ah) / (2.0 * _member_scale(run))
            spread = (std / pred.true_capacity_ah.abs() * 100.0).groupby(pred.cell).mean()
            error_label = f"± spread over the {members} members (mean std, % of capacity)"
        else:
            ape = (pred.predicted_capacity_ah - pred.true_capacity_ah).abs() / \
                pred.true_capacity_ah.abs() * 100.0
            window = ape.groupby([pred.cell, pred.start_cycle]).mean()
            spread = window.groupby(level=0).std(ddof=1)
            error_label = "± std over the cell's test windows"
        test = (table.role == "test").to_numpy()
        errors[test] = table.cell[test].map(spread).to_numpy(dtype=float)
    fig = _figure(_bar_width(len(table)), 3.4)
    ax = fig.subplots()
    _bars(ax, table.cell.tolist(), table.mape_pct.to_numpy(dtype=float), errors,
          [ROLE_COLORS.get(r, "0.3") for r in table.role], error_label)
    overall = run.metric("test_mape_pct")
    if overall is not None:
        ax.axhline(overall, color="k", lw=0.8, ls="--", label=f"test MAPE {overall:.2f} %")
    ax.set_ylabel("MAPE (%)", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    roles = [r for r in ROLE_COLORS if (table.role == r).any()]
    handles += [Patch(color=ROLE_COLORS[r]) for r in roles]
    ax.legend(handles, labels + [f"{r} cell" for r in roles], fontsize=6, loc="upper left")
    title = "MAPE per cell"
    if members > 1:
        per_member = [run.metric(f"member{i}_test_mape_pct") for i in range(members)]
        if all(v is not None for v in per_member):
            title += f"; test MAPE of each member: {' / '.join(f'{v:.2f}' for v in per_member)} %"
    ax.set_title(title, fontsize=8)
    return fig


# ----------------------------------------------------------------------------- history baselines


def history_per_cell(run: _Run):
    table = run.table("per_cell.csv", ("cell", "mape_pct"))
    if table is None or table.mape_pct.isna().all():
        return None
    by = table.groupby("cell", sort=False).mape_pct
    mean, std, seeds = by.mean(), by.std(ddof=1), by.count()
    several = "seed" in table.columns and int(seeds.max()) > 1
    fig = _figure(_bar_width(len(mean)), 3.4)
    ax = fig.subplots()
    _bars(ax, list(mean.index), mean.to_numpy(), std.to_numpy() if several else np.full(len(mean), np.nan),
          ["C0"] * len(mean), f"± std over {int(seeds.max())} seeds" if several else None)
    overall = run.metric("test_mape_pct")
    if overall is not None:
        ax.axhline(overall, color="k", lw=0.8, ls="--", label=f"test MAPE {overall:.2f} %")
    ax.set_ylabel("test MAPE (%)", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left")
    ax.set_title("MAPE per test cell" + (" (mean over seeds)" if several else ""), fontsize=8)
    return fig


# ----------------------------------------------------------------------------- life runs

LIFE_TRAJ = ("cell", "cycle_after_measurement", "true_capacity_ah", "predicted_capacity_ah")


def life_trajectories(run: _Run):
    traj = run.table("trajectories.csv", LIFE_TRAJ)
    if traj is None:
        return None
    per_cell = _cell_mape(traj, "predicted_capacity_ah", "true_capacity_ah")
    cells = _spread_pick(per_cell, MAX_PANELS)
    if not cells:
        return None
    band = {"lower90_ah", "upper90_ah"} <= set(traj.columns)
    shown = (f"{len(cells)} of {len(per_cell)} cells, lowest to highest MAPE"
             if len(per_cell) > len(cells) else "cells")
    fig, axes = _grid(len(cells), 3.3, 2.5, f"{shown}: capacity after the measurement, measured and "
                      "predicted" + (" (90 % band)" if band else ""))
    for ax, cell in zip(axes, cells, strict=True):
        t = traj[traj.cell == cell].sort_values("cycle_after_measurement")
        x = t.cycle_after_measurement.to_numpy()
        ax.plot(x, t.true_capacity_ah.to_numpy(), "k-", lw=1.0, label="measured")
        ax.plot(x, t.predicted_capacity_ah.to_numpy(), "C0-", lw=1.2, label="predicted")
        if band:
            ax.fill_between(x, t.lower90_ah.to_numpy(), t.upper90_ah.to_numpy(), color="C0",
                            alpha=0.2, lw=0, label="90 % interval")
        ax.set_title(f"{cell}: MAPE {per_cell[cell]:.2f} %", fontsize=8)
        ax.set_xlabel("cycles after the measurement", fontsize=7)
        ax.set_ylabel("capacity (Ah)", fontsize=7)
        ax.legend(fontsize=6)
        _ticks(ax)
    return fig


def life_parity(run: _Run):
    cells = run.table("cells.csv", ("true_remaining_cycles", "predicted_remaining_cycles"))
    if cells is None:
        return None
    cells = cells[np.isfinite(cells.true_remaining_cycles) & np.isfinite(cells.predicted_remaining_cycles)]
    if cells.empty:
        return None
    true, pred = cells.true_remaining_cycles.to_numpy(float), cells.predicted_remaining_cycles.to_numpy(float)
    fig = _figure(4.4, 4.2)
    ax = fig.subplots()
    if {"lower90_cycles", "upper90_cycles"} <= set(cells.columns):
        lo = np.clip(pred - cells.lower90_cycles.to_numpy(float), 0, None)
        hi = np.clip(cells.upper90_cycles.to_numpy(float) - pred, 0, None)
        ax.errorbar(true, pred, yerr=[lo, hi], fmt="o", ms=3, color="C0", ecolor=(0.12, 0.47, 0.71, 0.3),
                    elinewidth=0.6, label="predicted, 90 % interval")
    else:
        ax.plot(true, pred, "o", ms=3, color="C0", label="predicted")
    _diagonal(ax, true, pred)  # the view stays on the points; long intervals run off it
    ax.set_xlabel("true remaining life (cycles)", fontsize=8)
    ax.set_ylabel("predicted remaining life (cycles)", fontsize=8)
    ax.legend(fontsize=6, loc="upper left")
    scores = [f"{name} {v:{fmt}}{unit}" for name, key, fmt, unit in (
        ("MAPE", "slbjax_life_mape_pct", ".1f", " %"), ("90 % coverage", "slbjax_life_picp90", ".2f", ""),
        ("Spearman", "slbjax_life_spearman", ".2f", "")) if (v := run.metric(key)) is not None]
    ax.set_title(f"remaining life of {len(cells)} cells\n" + ", ".join(scores), fontsize=8)
    _ticks(ax)
    return fig


def life_per_cell(run: _Run):
    traj = run.table("trajectories.csv", LIFE_TRAJ)
    if traj is None:
        return None
    per_cell = _cell_mape(traj, "predicted_capacity_ah", "true_capacity_ah")
    if per_cell.empty:
        return None
    fig = _figure(_bar_width(len(per_cell)), 3.4)
    ax = fig.subplots()
    _bars(ax, list(per_cell.index), per_cell.to_numpy(), np.full(len(per_cell), np.nan),
          ["C0"] * len(per_cell), None)
    overall = run.metric("slbjax_trajectory_mape_pct")
    if overall is not None:
        ax.axhline(overall, color="k", lw=0.8, ls="--", label=f"all cells {overall:.2f} %")
        ax.legend(fontsize=6, loc="upper left")
    ax.set_ylabel("capacity trajectory MAPE (%)", fontsize=8)
    ax.set_title("capacity trajectory MAPE per cell (predicted from the measured cycles)", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- CVAE runs


def cvae_per_case(run: _Run):
    cases = run.table("per_case.csv", ("case", "protocol", "variant", "soh_mape_measured_pct",
                                       "soh_mape_generated_pct"))
    if cases is None:
        return None
    c = cases[(cases.protocol == "test_rows") & cases.variant.isin(["direct", "authors_shift"])]
    c = c.sort_values("case")
    if c.empty:
        return None
    x = c["case"].to_numpy(dtype=float)
    seeds = int(c.num_seeds.max()) if "num_seeds" in c.columns else 1
    err = (c.soh_mape_generated_seed_std_pct.to_numpy(float)
           if "soh_mape_generated_seed_std_pct" in c.columns and seeds > 1 else None)
    fig = _figure(5.2, 3.4)
    ax = fig.subplots()
    ax.bar(x - 0.2, c.soh_mape_measured_pct, 0.4, label="measured features (phase 1)")
    ax.bar(x + 0.2, c.soh_mape_generated_pct, 0.4, yerr=err, capsize=2,
           label="generated features (phase 2)" + (f", ± std over {int(seeds)} seeds" if err is not None
                                                   else ""))
    if x.min() <= 3.5 <= x.max():
        ax.axvline(3.5, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, [str(int(v)) for v in x])
    ax.set_xlabel("case (0-3 interpolation, 4-7 extrapolation)", fontsize=8)
    ax.set_ylabel("SOH MAPE (%)", fontsize=8)
    ax.set_title("SOH estimation at unseen SOC, test rows", fontsize=8)
    ax.legend(fontsize=6)
    _ticks(ax)
    return fig


# ----------------------------------------------------------------------------- sort runs

SORT_METRICS = {"lifetime_cycles": "group lifetime (cycles)", "aging_difference": "aging difference (Ah cycles)",
                "capacity_utilisation": "capacity utilisation"}


def sort_methods(run: _Run):
    methods = run.table("methods.csv", ("method", *SORT_METRICS))
    if methods is None:
        return None
    fig = _figure(3.4 * len(SORT_METRICS), 3.4)
    axes = fig.subplots(1, len(SORT_METRICS), squeeze=False)[0]
    x = np.arange(len(methods))
    for ax, (key, label) in zip(axes, SORT_METRICS.items(), strict=True):
        ax.bar(x, methods[key].to_numpy(float), color="C0", width=0.7, label="configured seed")
        if {f"{key}_p05", f"{key}_p95", f"{key}_median"} <= set(methods.columns):
            med = methods[f"{key}_median"].to_numpy(float)
            lo = med - methods[f"{key}_p05"].to_numpy(float)
            hi = methods[f"{key}_p95"].to_numpy(float) - med
            ok = np.isfinite(med)
            ax.errorbar(x[ok], med[ok], yerr=[lo[ok], hi[ok]], fmt="D", ms=3, color="k", elinewidth=0.8,
                        capsize=2, label="median, 5-95 % over seeds")
        ax.set_xticks(x, methods.method.astype(str).str.replace("_", " "), rotation=45, ha="right",
                      fontsize=7)
        ax.set_title(label, fontsize=8)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.tick_params(axis="y", labelsize=7)
    axes[0].legend(fontsize=6)
    fig.suptitle("grouping methods", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- entry point

Drawer = Callable[[_Run], object]
DRAWERS: dict[str, list[tuple[str, Drawer]]] = {
    "imoe": [("trajectories.png", imoe_trajectories), ("parity.png", imoe_parity),
             ("per_cell_mape.png", imoe_per_cell)],
    "history": [("per_cell_mape.png", history_per_cell)],
    "life": [("trajectories.png", life_trajectories), ("parity.png", life_parity),
             ("per_cell_mape.png", life_per_cell)],
    "cvae": [("per_case_mape.png", cvae_per_case)],
    "sort": [("methods.png", sort_methods)],
}
FIGURE_FILES = tuple(dict.fromkeys(n for drawers in DRAWERS.values() for n, _ in drawers))


def draw_run_figures(run_dir: str | Path) -> list[str]:
    """Draws the figures that apply to the run in ``run_dir``; returns the file names written.

    The family is read from ``config.json`` (without one, the iMOE figures are
    tried); each figure reads the tables it needs and is skipped when they are
    missing or cannot be drawn (a one-line note on stderr for a failure that
    is not a missing input).  Never raises for a figure.  ``SLBJAX_FIGURES=0``
    turns the figures off (e.g. for a sweep of many points).
    """
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    run = _Run(Path(run_dir))
    written = []
    for name, draw in DRAWERS.get(run.family or "imoe", []):
        fig = None
        try:
            fig = draw(run)
            if fig is None:
                continue
            _save(fig, run.path / name)
            written.append(name)
        except Exception as e:  # a figure is never worth a failed run
            print(f"note: {name} not drawn ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
        finally:
            if fig is not None:
                fig.clear()
    return written
