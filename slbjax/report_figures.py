"""Figures of ``slbjax report`` (matplotlib, Agg backend, PNG).

Each ``draw_*`` function writes one figure and returns its file name, or
None when the results hold nothing to draw for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from slbjax.evaluate.intervals import Z90

MODELS = ("imoe", "patchtst", "informer", "imoe-linear", "imoe-wofo", "polynomial", "mlp")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def draw_mape_bars(summary: list[dict], out: Path) -> str | None:
    """Fig. 3c / 5a: MAPE per group and model, slbjax bars (± std), paper markers."""
    rows = [r for r in summary if r["table"] in ("fig3c", "fig5a")]
    if not rows:
        return None
    plt = _plt()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 3.8))
    for j, m in enumerate(models):
        xs = np.arange(len(groups)) + (j - (len(models) - 1) / 2) * width
        sel = {r["group"]: r for r in rows if r["model"] == m}
        mean = [sel[g]["mean"] if g in sel else np.nan for g in groups]
        std = [sel[g]["std"] if g in sel else np.nan for g in groups]
        ax.bar(xs, mean, width, yerr=std, capsize=2, label=f"{m} (slbjax)")
        pm = [sel[g]["paper_mean"] if g in sel else np.nan for g in groups]
        ax.plot(xs, pm, "k_", markersize=9, markeredgewidth=2,
                label="paper mean" if j == 0 else None)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, fontsize=7)
    ax.set_ylabel("test MAPE (%)")
    ax.legend(fontsize=6, ncol=3)
    ax.set_title("Fig. 3c / 5a: slbjax (bars, mean ± std over seeds) vs paper (black)", fontsize=8)
    return _save(fig, out / "fig3c_fig5a_mape.png")


def _imoe_panels(results: pd.DataFrame, width: float):
    """(figure, one axis per Fig. 3c group, the groups, iMOE's runs) or None if there are none."""
    runs = results[(results.table == "fig3c") & (results.model == "imoe")]
    if runs.empty:
        return None
    groups = list(dict.fromkeys(runs.group))
    fig, axes = _plt().subplots(1, len(groups), figsize=(width * len(groups), 3), squeeze=False)
    return fig, axes[0], groups, runs


def draw_parity(results: pd.DataFrame, root: Path, out: Path) -> str | None:
    """Predicted vs true capacity of iMOE's first seed, one panel per group."""
    panels = _imoe_panels(results, 3.0)
    if panels is None:
        return None
    fig, axes, groups, runs = panels
    for ax, g in zip(axes, groups, strict=True):
        run = runs[runs.group == g].sort_values("seed").iloc[0]
        pred = pd.read_csv(root / run["run"] / "predictions.csv")
        if len(pred) > 20000:
            pred = pred.sample(20000, random_state=0)
        ax.scatter(pred.true_capacity_ah, pred.predicted_capacity_ah, s=1, alpha=0.3)
        lo = float(min(pred.true_capacity_ah.min(), pred.predicted_capacity_ah.min()))
        hi = float(max(pred.true_capacity_ah.max(), pred.predicted_capacity_ah.max()))
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
        ax.set_title(f"{g} (seed {int(run['seed'])})", fontsize=8)
        ax.set_xlabel("true capacity (Ah)", fontsize=7)
        ax.set_ylabel("predicted (Ah)", fontsize=7)
    return _save(fig, out / "parity_imoe.png")


def draw_trajectories(results: pd.DataFrame, root: Path, out: Path) -> str | None:
    """One test trajectory per group: truth, mean over seeds, nominal 90 % band over seeds."""
    panels = _imoe_panels(results, 3.2)
    if panels is None:
        return None
    fig, axes, groups, runs = panels
    for ax, g in zip(axes, groups, strict=True):
        tables = [pd.read_csv(root / r / "predictions.csv") for r in runs[runs.group == g]["run"]]
        first = tables[0]
        cell = first.cell.iloc[0]
        starts = np.sort(first[first.cell == cell].start_cycle.unique())
        start = starts[len(starts) // 2]
        sel = [t[(t.cell == cell) & (t.start_cycle == start)].sort_values("step") for t in tables]
        steps = sel[0].step.to_numpy() + start
        preds = np.stack([s.predicted_capacity_ah.to_numpy() for s in sel])
        mean = preds.mean(0)
        std = preds.std(0, ddof=1) if len(preds) > 1 else np.zeros_like(mean)
        ax.plot(steps, sel[0].true_capacity_ah, "k-", label="measured")
        ax.plot(steps, mean, "C0-", label=f"iMOE mean of {len(preds)} seed(s)")
        ax.fill_between(steps, mean - Z90 * std, mean + Z90 * std, alpha=0.3, color="C0",
                        label="nominal 90 % over seeds")
        ax.set_title(f"{g}: {cell}, start {start}", fontsize=8)
        ax.set_xlabel("cycle", fontsize=7)
        ax.set_ylabel("capacity (Ah)", fontsize=7)
        ax.legend(fontsize=6)
    return _save(fig, out / "trajectories_imoe.png")


SWEEP_TITLES = {"fig5b": "Fig. 5b: data access (%)", "fig5c": "Fig. 5c: experts",
                "fig5d": "Fig. 5d: horizon (cycles)", "fig3f": "Fig. 3f: initial SOC (%)"}


def draw_sweeps(summary: list[dict], out: Path) -> str | None:
    """MAPE against the swept value: slbjax (mean ± std) and the paper."""
    present = [t for t in SWEEP_TITLES if any(r["table"] == t for r in summary)]
    if not present:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3), squeeze=False)
    for ax, t in zip(axes[0], present, strict=True):
        rows = sorted((r for r in summary if r["table"] == t), key=lambda r: float(r["x"]))
        scale = 100.0 if rows[0]["x_key"] == "data.train_fraction" else 1.0
        xs = np.array([float(r["x"]) * scale for r in rows])
        ax.errorbar(xs, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o",
                    capsize=3, label="slbjax")
        ax.errorbar(xs + 0.01 * (xs.max() - xs.min() + 1), [r["paper_mean"] for r in rows],
                    yerr=[r["paper_std"] for r in rows], marker="s", capsize=3, color="k",
                    linestyle="--", label="paper")
        ax.set_title(SWEEP_TITLES[t], fontsize=8)
        ax.set_ylabel("test MAPE (%)", fontsize=7)
        ax.legend(fontsize=6)
    return _save(fig, out / "sweeps.png")


def draw_lsd_soh(lsd: pd.DataFrame, out: Path) -> str | None:
    if lsd.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(lsd.index.astype(str), lsd.mape_mean, yerr=lsd.mape_std.fillna(0.0), capsize=3)
    ax.set_xlabel("SOH at prediction start")
    ax.set_ylabel("iMOE test MAPE (%)")
    ax.set_title("Fig. 5e: LSD by SOH interval", fontsize=8)
    return _save(fig, out / "lsd_by_soh.png")


def _cvae_runs(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.model == "cvae"]


def draw_cvae_cases(results: pd.DataFrame, root: Path, out: Path) -> str | None:
    """Per battery: phase-1 vs phase-2 SOH MAPE per case (paper protocol)."""
    runs = _cvae_runs(results)
    if runs.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3), squeeze=False)
    for ax, (_, run) in zip(axes[0], runs.iterrows(), strict=True):
        c = pd.read_csv(root / run["run"] / "per_case.csv")
        c = c[(c.protocol == "test_rows") & c.variant.isin(["direct", "authors_shift"])].sort_values("case")
        xs = c["case"].to_numpy()
        ax.bar(xs - 0.2, c.soh_mape_measured_pct, 0.4, label="phase 1 (measured)")
        ax.bar(xs + 0.2, c.soh_mape_generated_pct, 0.4, yerr=c.soh_mape_generated_seed_std_pct,
               capsize=2, label="phase 2 (generated)")
        ax.axvline(3.5, color="k", linewidth=0.6, linestyle=":")
        ax.set_xticks(xs)
        ax.set_xlabel("case (0-3 interpolation, 4-7 extrapolation)", fontsize=7)
        ax.set_ylabel("SOH MAPE (%)", fontsize=7)
        ax.set_title(run["group"], fontsize=8)
        ax.legend(fontsize=6)
    return _save(fig, out / "cvae_cases.png")


def draw_cvae_generation(results: pd.DataFrame, root: Path, out: Path) -> str | None:
    """Per battery: generation MAPE per case and feature U1..U21 (paper Fig. 3b)."""
    runs = _cvae_runs(results)
    if runs.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.4 * len(runs)), squeeze=False)
    for ax, (_, run) in zip(axes[:, 0], runs.iterrows(), strict=True):
        s = pd.read_csv(root / run["run"] / "per_soc.csv")
        s = s[(s.protocol == "test_rows") & s.variant.isin(["direct", "authors_shift"])]
        cols = [c for c in s.columns if c.startswith("gen_mape_U")]
        grid = s.groupby("case")[cols].mean()
        im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(grid)), [f"case {c}" for c in grid.index], fontsize=6)
        ax.set_xticks(range(len(cols)), [c[len("gen_mape_"):-len("_pct")] for c in cols], fontsize=6)
        ax.set_title(f"{run['group']}: generation MAPE (%) per feature", fontsize=8)
        fig.colorbar(im, ax=ax)
    return _save(fig, out / "cvae_generation_heatmap.png")


def draw_all(results: pd.DataFrame, summary: list[dict], lsd: pd.DataFrame, root: Path,
             out: Path) -> list[str]:
    """Every figure the results support; returns their file names."""
    names = [
        draw_mape_bars(summary, out),
        draw_parity(results, root, out),
        draw_trajectories(results, root, out),
        draw_sweeps(summary, out),
        draw_lsd_soh(lsd, out),
        draw_cvae_cases(results, root, out),
        draw_cvae_generation(results, root, out),
    ]
    return [n for n in names if n]
