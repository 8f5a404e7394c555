"""``slbjax report SUITE``: run a paper suite and write a checkable report.

Layout of a report folder::

    report.md      tables of every experiment next to the paper's numbers
    results.csv    one row per run: its labels (table, group, model, swept
                   value, seed), its run folder and every metric it wrote
    summary.csv    the tables' numbers: mean, std and count over seeds, the
                   paper's mean / std / count and the difference
    figures/       PNG: Fig. 3c bars, parity, trajectories, sweeps, LSD by
                   SOH, CVAE cases and generation heatmaps
    runs/<family>-<hash>/       one ordinary run folder per distinct config

A run folder is named by a hash of its resolved config, so points of
different tables that share a config (e.g. Fig. 3c's iMOE and Fig. 5c's five
experts) train once, and a second ``report`` over the same folder reuses
every finished run instead of recomputing it.  Points that differ only in
values that do not change array shapes (seeds) are members of one compiled
program (:func:`slbjax.runners.imoe.train_and_evaluate_group`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax import config as cfglib
from slbjax import history, rundir, runners
from slbjax import paper_reference as paper
from slbjax.suites import SWEEP_CONDITION, Point, suite_points

MAIN_METRIC = {"imoe": "test_mape_pct", "cvae": "interp_soh_mape_generated_pct"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- running


def config_key(cfg) -> str:
    """Canonical JSON of a config and its family: equal keys mean the same run."""
    return json.dumps({"family": type(cfg).family, "config": cfglib.to_dict(cfg)}, sort_keys=True)


def run_folder(runs_dir: Path, point: Point) -> Path:
    """``runs/<family>-<hash of the config>``: one folder per distinct config."""
    digest = hashlib.sha1(config_key(point.cfg).encode()).hexdigest()[:12]
    return runs_dir / f"{type(point.cfg).family}-{digest}"


def run_points(points: list[Point], data_dir: Path | None, runs_dir: Path) -> tuple[list[dict], int]:
    """Trains every distinct config once (reusing finished runs).

    Returns:
      (metrics of each point, in order; number of distinct runs reused).
    """
    first: dict[str, int] = {}
    for i, p in enumerate(points):
        first.setdefault(config_key(p.cfg), i)
    distinct = [rundir.RunPoint(points[i].experiment, points[i].cfg, run_folder(runs_dir, points[i]))
                for i in first.values()]
    done = [rundir.finished_metrics(p.run_dir, p.cfg, p.experiment) is not None for p in distinct]
    todo = {(type(p.cfg).family, _signature(p.cfg)) for p, d in zip(distinct, done, strict=True) if not d}
    _log(f"report: {len(points)} points, {len(first)} distinct runs ({sum(done)} reused), "
         f"{len(todo)} program(s) to train")
    metrics, reused = rundir.execute(distinct, data_dir, log=lambda m: _log(f"report: {m}"))
    by_key = dict(zip(first, metrics, strict=True))
    return [by_key[config_key(p.cfg)] for p in points], sum(reused)


def _signature(cfg) -> str:
    runner = runners.for_config(cfg)
    return runner.shape_signature(cfg) if hasattr(runner, "train_and_evaluate_group") else config_key(cfg)


def results_table(points: list[Point], metrics: list[dict], runs_dir: Path, root: Path) -> pd.DataFrame:
    rows = []
    for p, m in zip(points, metrics, strict=True):
        rows.append({
            "table": p.table, "group": p.group, "model": p.model, "x_key": p.x_key, "x": p.x,
            "seed": p.seed, "experiment": p.experiment, "overrides": " ".join(p.overrides),
            "run": str(run_folder(runs_dir, p).relative_to(root)), **m,
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- tables


def _stats(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _pm(mean: float, std: float, n: int, digits: int = 2) -> str:
    if n == 0 or not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def summary_rows(results: pd.DataFrame) -> list[dict]:
    """Mean / std / n over seeds of each (table, group, model, x) next to the paper's."""
    rows = []
    imoe = results[results.model != "cvae"]
    for (table, group, model, x), part in imoe.groupby(["table", "group", "model", "x"], sort=False):
        mean, std, n = _stats(part["test_mape_pct"])
        ref = paper_value(table, group, model, part["x_key"].iloc[0], x)
        rmse = _stats(part["test_rmse_ah"])
        r2 = _stats(part["test_r2"])
        rows.append({
            "table": table, "group": group, "model": model, "x_key": part["x_key"].iloc[0], "x": x,
            "metric": "test_mape_pct", "mean": mean, "std": std, "n": n,
            "rmse_mean": rmse[0], "r2_mean": r2[0],
            "paper_mean": ref[0] if ref else np.nan, "paper_std": ref[1] if ref else np.nan,
            "paper_n": ref[2] if ref else 0,
        })
    for r in rows:
        r["diff"] = r["mean"] - r["paper_mean"]
        r["beyond_paper_spread"] = bool(np.isfinite(r["diff"]) and abs(r["diff"]) > r["paper_std"])
    return rows


def paper_value(table: str, group: str, model: str, x_key: str, x: str):
    """(mean, std, n) of the paper's figure data for one row, or None."""
    if table in ("fig3c", "fig5a"):
        return paper.lookup(paper.FIG3C, group, model) or paper.lookup(paper.FIG5A, group, model)
    sweep_tables = {"fig5b": paper.FIG5B, "fig5c": paper.FIG5C, "fig5d": paper.FIG5D, "fig3f": paper.FIG3F}
    if table in sweep_tables:
        value = float(x)
        key = int(round(value * 100)) if x_key == "data.train_fraction" else int(value)
        return paper.lookup(sweep_tables[table], group, key)
    return None


def _table_md(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _diff(r: dict) -> str:
    if not np.isfinite(r["diff"]):
        return "–"
    return f"{r['diff']:+.2f}{' *' if r['beyond_paper_spread'] else ''}"


def _row_cells(r: dict) -> list[str]:
    return [_pm(r["mean"], r["std"], r["n"]), _pm(r["paper_mean"], r["paper_std"], r["paper_n"]), _diff(r)]


MODEL_NAMES = {"imoe": "iMOE", "patchtst": "PatchTST", "informer": "Informer",
               "imoe-linear": "iMOE-linear", "imoe-wofo": "iMOE-woFO",
               "polynomial": "polynomial (history)", "mlp": "MLP (history)"}


def imoe_sections(summary: list[dict], results: pd.DataFrame, root: Path) -> list[str]:
    out = []
    head = ["group", "model", "slbjax MAPE % (n)", "paper MAPE % (n)", "slbjax − paper"]
    fig3c = [r for r in summary if r["table"] == "fig3c"]
    if fig3c:
        out.append("## Fig. 3c: degradation trajectories, iMOE and the transformer baselines\n")
        out.append("Test MAPE (%) over all predicted points of the test cells, mean ± sample std "
                   "over seeds (count). `*`: the difference is larger than the paper's own seed "
                   "spread.\n")
        rows = [[r["group"], MODEL_NAMES[r["model"]], *_row_cells(r)] for r in fig3c]
        out.append(_table_md(head, rows) + "\n")
        imoe = [r for r in fig3c if r["model"] == "imoe"]
        out.append(_table_md(
            ["group", "iMOE RMSE (Ah)", "iMOE R²"],
            [[r["group"], f"{r['rmse_mean']:.4f}", f"{r['r2_mean']:.4f}"] for r in imoe],
        ) + "\n")
    fig5a = [r for r in summary if r["table"] in ("fig5a",)]
    if fig5a:
        out.append("## Fig. 5a: ablations (same splits, inputs and early-stopping rule) and history baselines\n")
        rows = [[r["group"], MODEL_NAMES[r["model"]], *_row_cells(r)] for r in fig5a]
        out.append(_table_md(head, rows) + "\n")
        out.append(
            "The history baselines (polynomial, MLP) are given the cell's measured capacity "
            "before the prediction start, which the iMOE setting (a retired cell without its "
            "record) does not have, and are scored as the authors' notebooks score them "
            "(`slbjax/history.py`): the polynomial (degree 3 in the cycle number, fitted to the "
            "previous 50 capacities, 50 cycles ahead) over every window of each test cell, one "
            "deterministic number per group (the mean over its test cells, so n = 1); the MLP "
            "(10 past capacities to the next 100) trained on the training cells' windows with "
            "the best-validation weights, over every window of the test cells.  Groups whose "
            "cells are too short for a window have no number.  Per-cell values: "
            "`history/*/per_cell.csv`.\n")
    titles = {
        "fig5b": ("Fig. 5b: training-data access", "share of training cells (%)"),
        "fig5c": ("Fig. 5c: number of experts", "experts"),
        "fig5d": ("Fig. 5d: prediction horizon", "horizon (cycles)"),
        "fig3f": ("Fig. 3f: random initial SOC", "initial SOC (%)"),
    }
    for table, (title, xlabel) in titles.items():
        rows = [r for r in summary if r["table"] == table]
        if not rows:
            continue
        rows.sort(key=lambda r: float(r["x"]))
        out.append(f"## {title} (UL-NCA {SWEEP_CONDITION.split()[-1]})\n")
        cells = []
        for r in rows:
            x = float(r["x"])
            label = f"{x * 100:.0f}" if r["x_key"] == "data.train_fraction" else f"{x:.0f}"
            cells.append([label, *_row_cells(r)])
        out.append(_table_md([xlabel, "slbjax MAPE % (n)", "paper MAPE % (n)", "slbjax − paper"], cells) + "\n")
    return out


# ----------------------------------------------------------------------------- LSD by SOH


SOH_BINS = (0.6, 0.7, 0.8, 0.9, 1.01)


def lsd_by_soh(results: pd.DataFrame, root: Path) -> pd.DataFrame:
    """MAPE of iMOE's LSD test predictions by the SOH at the prediction start (Fig. 5e).

    SOH at a start = the true capacity there / the cell's largest capacity in
    the test windows (LSD cells start near 1.9-2.0 Ah; the files give no
    nominal capacity).  Mean and std over seeds of the per-bin MAPE.
    """
    runs = results[(results.table == "fig3c") & (results.group == "LSD") & (results.model == "imoe")]
    per_seed = []
    for run in runs["run"]:
        pred = pd.read_csv(root / run / "predictions.csv")
        start = pred[pred.step == 0].set_index(["cell", "start_cycle"])["true_capacity_ah"]
        soh = start / start.groupby(level="cell").transform("max")
        pred = pred.join(soh.rename("soh_start"), on=["cell", "start_cycle"])
        pred["bin"] = pd.cut(pred["soh_start"], SOH_BINS, right=False)
        ape = (pred.predicted_capacity_ah - pred.true_capacity_ah).abs() / pred.true_capacity_ah * 100
        per_seed.append(ape.groupby(pred["bin"], observed=False).agg(["mean", "size"]))
    if not per_seed:
        return pd.DataFrame()
    table = pd.concat(per_seed, keys=range(len(per_seed)), names=["seed"])
    out = table.groupby(level="bin", observed=False).agg(
        mape_mean=("mean", "mean"), mape_std=("mean", "std"), points=("size", "first"))
    out.index = [f"{b.left:.1f}–{min(b.right, 1.0):.1f}" for b in out.index]
    return out


# ----------------------------------------------------------------------------- CVAE


def cvae_sections(results: pd.DataFrame, root: Path) -> list[str]:
    out = []
    runs = results[results.model == "cvae"]
    if runs.empty:
        return out
    out.append("## CVAE: SOH estimation at unseen SOC (Tao et al., Nat. Commun. 2024, Fig. 3-4)\n")
    out.append("Per case: phase 1 = random forest on the measured rows at the training SOCs; "
               "phase 2 = forest on generated rows (paper protocol: conditioned on the test rows' "
               "SOH; extrapolation cases 4-7 by the authors' code's feature shift); `eq89` = the "
               "paper's Methods latent scaling; `honest` = generation conditioned on training "
               "SOH only.  SOH MAPE and generation MAPE in %, mean over the unseen SOC levels "
               "and seeds (± std over seeds where there are several).\n")
    for _, row in runs.iterrows():
        cases = pd.read_csv(root / row["run"] / "per_case.csv")
        paper_ref = paper.CVAE.get(row["group"], {})
        out.append(f"### {row['group']} ({int(row.get('num_rows', 0))} rows, "
                   f"{int(row.get('num_members', 0))} members in one program, "
                   f"{row.get('train_seconds', float('nan')):.0f} s training)\n")
        rows = []
        for case in sorted(cases["case"].unique()):
            c = cases[cases["case"] == case]
            main_variant = "authors_shift" if case >= 4 else "direct"

            def get(protocol, variant, col, c=c):
                sel = c[(c.protocol == protocol) & (c.variant == variant)]
                return float(sel[col].iloc[0]) if len(sel) else float("nan")

            p2 = get("test_rows", main_variant, "soh_mape_generated_pct")
            p2s = get("test_rows", main_variant, "soh_mape_generated_seed_std_pct")
            rows.append([
                str(case), f"{get('test_rows', main_variant, 'soh_mape_measured_pct'):.2f}",
                f"{p2:.2f} ± {p2s:.2f}",
                f"{get('test_rows', 'eq89', 'soh_mape_generated_pct'):.2f}" if case >= 4 else "–",
                f"{get('train', main_variant, 'soh_mape_generated_pct'):.2f}",
                f"{get('test_rows', main_variant, 'generation_mape_pct'):.2f}",
                f"{get('test_rows', main_variant, 'generation_kl'):.3g}",
                _paper_case(paper_ref, case),
            ])
        out.append(_table_md(["case", "phase 1", "phase 2", "phase 2 eq89", "phase 2 honest",
                              "generation MAPE", "KL", "paper"], rows) + "\n")
        interp, extrap = row.get("interp_soh_mape_generated_pct"), row.get("extrap_soh_mape_generated_pct")
        line = f"Phase 2 average: interpolation {interp:.2f} %, extrapolation {extrap:.2f} %"
        if "interp" in paper_ref:
            line += (f" (paper: {paper_ref['interp']:.1f} % and {paper_ref['extrap']:.1f} %; "
                     f"difference {interp - paper_ref['interp']:+.2f} / {extrap - paper_ref['extrap']:+.2f})")
        else:
            line += " (the paper gives no per-type average for this battery that slbjax could take)"
        out.append(line + ".\n")
    return out


def _paper_case(ref: dict, case: int) -> str:
    phase1 = ref.get("phase1", {})
    return f"phase 1 {phase1[case]:.1f}" if case in phase1 else "–"


# ----------------------------------------------------------------------------- writing


def write_report(suite: str, results: pd.DataFrame, root: Path, *, smoke: bool, reused: int,
                 seconds: float, sets: tuple[str, ...] = ()) -> Path:
    from slbjax import report_figures

    figures_dir = root / "figures"
    figures_dir.mkdir(exist_ok=True)
    summary = summary_rows(results)
    pd.DataFrame(summary).to_csv(root / "summary.csv", index=False)
    lsd = lsd_by_soh(results, root) if (results.group == "LSD").any() else pd.DataFrame()
    figures = report_figures.draw_all(results, summary, lsd, root, figures_dir)

    lines = [
        f"# slbjax report: {suite}{' (smoke size)' if smoke else ''}\n",
        f"Written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `slbjax report {suite}"
        f"{' --smoke' if smoke else ''}{''.join(f' --set {s}' for s in sets)}`: {len(results)} runs ({results['run'].nunique()} distinct "
        f"configs, {reused} reused from earlier invocations), {seconds:.0f} s.  Every run is an "
        "ordinary run folder under `runs/` (listed in `results.csv`).\n",
        f"Paper numbers: {paper.SOURCE}\n",
    ]
    if smoke:
        lines.append("**Smoke size**: tiny models and a few epochs; the numbers show the "
                     "structure, not the papers' accuracy.\n")
    lines += imoe_sections(summary, results, root)
    if not lsd.empty:
        lines.append("## Fig. 5e: LSD by SOH at the prediction start\n")
        lines.append("iMOE test MAPE (%) of the LSD predictions binned by the SOH at the start "
                     "cycle (capacity / the cell's largest capacity); mean ± std over seeds.  "
                     "The published figure data hold no LSD-by-SOH numbers, so there is no "
                     "paper column.\n")
        lines.append(_table_md(["SOH at start", "MAPE %", "predicted points"], [
            [str(idx), "–" if not r.points else
             f"{r.mape_mean:.2f} ± {0.0 if np.isnan(r.mape_std) else r.mape_std:.2f}",
             str(int(r.points))] for idx, r in lsd.iterrows()]) + "\n")
    lines += cvae_sections(results, root)
    lines.append("## What the published data cannot support\n")
    lines.append(
        "* TPSL (Fixed, Arbitrary): the published files hold one cell per condition, both on "
        "the training side of the reference split, so no test metric exists; `imoe-tpsl` "
        "reports the training fit only and the suite leaves TPSL out rather than invent a split.\n"
        "* UL-NCM and UL-NCMNCA (paper Fig. 3c groups): their files are not in the published "
        "data folder; `imoe-ul --set data.subset=NCM` runs them when supplied.\n"
        "* CVAE LMO 10 Ah: its workbook is not published with the data; `cvae-paper` runs it "
        "when `pulse/LMO_10Ah_W_3000.xlsx` is in the data folder.\n"
    )
    lines.append("## Figures\n")
    lines += [f"![{name}](figures/{name})\n" for name in figures]
    path = root / "report.md"
    path.write_text("\n".join(lines))
    return path


def run_report(suite: str, smoke: bool, data_dir: Path | None, workdir: Path,
               sets: tuple[str, ...] | list[str] = ()) -> Path:
    """Runs (or reuses) every point of ``suite`` (with ``sets``, see
    :func:`slbjax.suites.with_sets`) and writes the report into ``workdir``."""
    start = time.perf_counter()
    points = suite_points(suite, smoke, data_dir, sets)
    workdir.mkdir(parents=True, exist_ok=True)
    runs_dir = workdir / "runs"
    metrics, reused = run_points(points, data_dir, runs_dir)
    results = results_table(points, metrics, runs_dir, workdir)
    conditions = [g.split()[-1] for g in dict.fromkeys(results.group) if g.startswith("UL-NCA ")
                  and ((results.group == g) & (results.table == "fig5a")).any()]
    if conditions:
        mlp = history.HistoryMlp(epochs=20) if smoke else history.HistoryMlp()
        rows = history.run_history_baselines(conditions, data_dir, workdir, seeds=2 if smoke else 10, mlp=mlp)
        results = pd.concat([results, pd.DataFrame(rows)], ignore_index=True)
    results.to_csv(workdir / "results.csv", index=False)
    return write_report(suite, results, workdir, smoke=smoke, reused=reused,
                        seconds=time.perf_counter() - start, sets=tuple(sets))
