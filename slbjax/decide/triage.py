"""``slbjax triage``: field measurements of retired cells in, groups and uses out.

For every cell file under the input path (a file may hold only the first few
cycles of a record), a finished ``life-lsd`` run predicts the remaining life
with its calibrated 90 % interval from the first ``data.measured_cycles``
cycles; the cells are grouped on those lives (the groups of largest expected
available lifetime under the intervals, or packs of N along the predicted
order: :func:`group_cells`); each group
is assigned to a second-life application or to recycling
(:mod:`slbjax.decide.allocate`) on its life at the lower 90 % bound.  Writes
``cells.csv``, ``groups.csv``, ``report.md`` with figures, and ``triage.json``
(what was run on what).

Every cell is compared with the run's training ranges (:mod:`slbjax.data.ranges`):
a cell outside them is warned about on stderr (one line per cell), marked
``in_distribution = False`` in ``cells.csv`` and counted in ``triage.json`` and
``report.md``; with ``refuse_out_of_distribution`` it stops the triage before
anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from slbjax.data import ranges
from slbjax.data.cells import Cell
from slbjax.data.imoe_files import find_cell_files, load_cell_file
from slbjax.decide import allocate, grouping
from slbjax.decide.life_run import CellPrediction, LifeRun, load_life_run, prediction_table
from slbjax.errors import ConfigError, RunDirError
from slbjax.rundir import write_json

MARKER = "triage.json"
CELL_COLUMNS = ("cell", "measured_cycle", "capacity_ah", "soh", "predicted_life_cycles",
                "life_lower90", "life_upper90", "group", "application")


def _log(msg: str) -> None:
    print(f"[triage] {msg}", file=sys.stderr, flush=True)


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Creates ``out``; a non-empty folder is refused, unless ``overwrite`` and it is an
    earlier triage output (holds ``triage.json``), whose files are then replaced."""
    check_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_output(out: Path, overwrite: bool) -> None:
    """Raises RunDirError when :func:`prepare_output` would refuse ``out``; creates nothing."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output {out} is a file, expected a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"output folder {out} is not empty; choose another -o or pass "
                              "--overwrite to replace an earlier triage output")
        if not (out / MARKER).exists():
            raise RunDirError(f"refusing to overwrite {out}: it is not a triage output "
                              f"(no {MARKER}); remove it yourself if you mean it")


def range_check(life_run: LifeRun, cells: list[Cell], sources: list[str],
                refuse: bool = False) -> tuple[list[bool | None], list[str]]:
    """([cells] in_distribution, None without training ranges; the warnings, one per cell
    outside), each warning written to stderr.

    Raises:
      OutOfDistribution: with ``refuse``, the first cell outside (or a run without ranges).
    """
    tr = life_run.training_ranges
    if tr is None:
        if refuse:
            raise ranges.OutOfDistribution.unchecked(life_run.path)
        _log(f"note: {life_run.path} holds no {ranges.RANGES_FILE} (trained before training "
             "ranges were recorded): no out-of-distribution check was done")
        return [None] * len(cells), []
    flags, warnings = [], []
    for cell, where in zip(cells, sources, strict=True):
        warning = life_run.range_warning(cell, where)
        if warning is not None:
            if refuse:
                raise ranges.OutOfDistribution.for_cell(warning)
            if not warnings:
                _log(f"out-of-distribution check: {tr.describe()}")
            print(f"warning: {warning}", file=sys.stderr, flush=True)
            warnings.append(warning)
        flags.append(warning is None)
    return flags, warnings


def group_cells(table: pd.DataFrame, num_groups: int | None, group_size: int | None,
                level: float) -> np.ndarray:
    """[N] group labels 0.. by predicted life: ``group_size`` packs along the predicted-life
    order, or ``num_groups`` groups of at least 2 cells with the largest expected available
    lifetime under each cell's calibrated interval (``level``; a log-normal life, see
    :func:`slbjax.decide.grouping.expected_partition`)."""
    predicted = table.predicted_life_cycles.to_numpy(np.float64)
    n = len(predicted)
    if group_size is not None:
        if not 1 <= group_size <= n:
            raise ConfigError(f"--group-size {group_size} must lie in 1..{n} (the cells read)")
        return grouping.group_by_life(predicted, 0, group_size)
    k = num_groups if num_groups is not None else max(1, n // 10)
    if not 1 <= k <= n:
        raise ConfigError(f"--groups {k} must lie in 1..{n} (the cells read)")
    sd = (np.log(table.life_upper90.to_numpy(np.float64))
          - np.log(table.life_lower90.to_numpy(np.float64))) / (2 * norm.ppf(0.5 + level / 2))
    return grouping.expected_partition(np.log(predicted), sd, k, min(2, n // k))


def group_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per group: size, the group's life (its shortest-lived cell) with interval, capacities."""
    rows = []
    for g, part in cells.groupby("group", sort=True):
        rows.append({
            "group": int(g), "size": len(part),
            "predicted_life_cycles": float(part.predicted_life_cycles.min()),
            "life_lower90": float(part.life_lower90.min()),
            "life_upper90": float(part.life_upper90.min()),
            "capacity_min_ah": float(part.capacity_ah.min()),
            "capacity_spread_ah": float(part.capacity_ah.max() - part.capacity_ah.min()),
            "soh_min": float(part.soh.min()),
        })
    return pd.DataFrame(rows)


def lower_life_matrix(cells: pd.DataFrame, preds: list[CellPrediction], apps, nominal_ah: float,
                      end_soh: float) -> np.ndarray:
    """[G, A] cycles each group lasts, at the lower band, until each application's end-of-life
    SOH: the weakest cell of the group; an end-of-life SOH below the model's own end
    (``end_soh``) counts the life to ``end_soh`` (the trajectory is not predicted beyond)."""
    groups = sorted(cells.group.unique())
    out = np.zeros((len(groups), len(apps)))
    for gi, g in enumerate(groups):
        members = np.flatnonzero(cells.group.to_numpy() == g)
        for a, app in enumerate(apps):
            soh = max(app.end_of_life_soh, end_soh)
            out[gi, a] = min(allocate.life_to_threshold(preds[i].lower_ah, nominal_ah, soh)
                             for i in members)
    return out


def run(run_path: Path, input_path: Path, out: Path, *, num_groups: int | None = None,
        group_size: int | None = None, apps_path: Path | None = None,
        cell_voltage_v: float = 3.6, overwrite: bool = False,
        refuse_out_of_distribution: bool = False) -> dict:
    """The whole triage (see the module doc); returns a summary (also in ``triage.json``).
    Nothing is written when it fails (nor, with ``refuse_out_of_distribution``, when a cell
    lies outside the training ranges)."""
    life_run = load_life_run(run_path)
    apps = allocate.load_catalogue(apps_path)
    files = find_cell_files(input_path)
    out = Path(out)
    check_output(out, overwrite)
    d = life_run.config.data
    cells = []
    for i, f in enumerate(files, 1):
        cells.append(load_cell_file(f))
        if i % 10 == 0 or i == len(files):
            _log(f"read {i}/{len(files)} cell files")
    sources = [ranges.relative_source(f, Path(input_path)) for f in files]
    inside, ood = range_check(life_run, cells, sources, refuse_out_of_distribution)
    preds = life_run.predict(cells)
    _log(f"predicted {len(preds)} cells from their first {d.measured_cycles} cycles")
    out = prepare_output(out, overwrite)
    table = prediction_table(preds, d.nominal_ah)
    table["in_distribution"] = pd.array(inside, dtype="boolean")
    table["group"] = group_cells(table, num_groups, group_size,
                                 life_run.config.train.interval_level) + 1
    groups = group_table(table)
    life = lower_life_matrix(table, preds, apps, d.nominal_ah, d.end_soh)
    energy = allocate.usable_energy_kwh(groups["size"].to_numpy(), groups.capacity_min_ah.to_numpy(),
                                        cell_voltage_v)
    result = allocate.allocate(apps, groups.soh_min.to_numpy(), energy, life,
                               groups=groups.group.tolist())
    groups = groups.merge(result.table, on="group")
    table = table.merge(groups[["group", "application"]], on="group")
    table.loc[:, [*CELL_COLUMNS, "estimated_soh", "true_life_cycles", "in_distribution"]].to_csv(
        out / "cells.csv", index=False)
    groups.to_csv(out / "groups.csv", index=False)
    figures = [draw_group_trajectories(table, preds, out, life_run.config.end_ah),
               draw_parity(table, out), draw_assignment(groups, out)]
    summary = {"run": str(Path(run_path).resolve()), "input": str(Path(input_path).resolve()),
               "catalogue": str(apps_path or allocate.bundled_catalogue()),
               "num_cells": len(table), "num_groups": len(groups),
               "measured_cycles": d.measured_cycles, "cell_voltage_v": cell_voltage_v,
               "served_value": result.served_value,
               "range_check": life_run.training_ranges is not None,
               "num_out_of_distribution": len(ood) if life_run.training_ranges is not None else None,
               "out_of_distribution": ood}
    known = table.dropna(subset=["true_life_cycles"])
    if len(known):
        inside = (known.true_life_cycles >= known.life_lower90) & (known.true_life_cycles <= known.life_upper90)
        summary.update({"cells_with_truth": len(known), "life_picp90": float(inside.mean()),
                        "life_mape_pct": float((abs(known.predicted_life_cycles - known.true_life_cycles)
                                                / known.true_life_cycles).mean() * 100)})
    write_json(out / MARKER, summary)
    (out / "report.md").write_text(report_text(summary, groups, [f for f in figures if f]))
    _log(f"wrote {out}/cells.csv, groups.csv, report.md")
    return summary


def report_text(summary: dict, groups: pd.DataFrame, figures: list[str]) -> str:
    """``report.md``: what was read, the groups and their uses, the figures."""
    lines = [
        "# Triage of retired cells", "",
        f"- run: `{summary['run']}`", f"- input: `{summary['input']}` ({summary['num_cells']} cells, "
        f"first {summary['measured_cycles']} cycles of each used)",
        f"- application catalogue: `{summary['catalogue']}`",
        f"- groups: {summary['num_groups']}; a group lives as long as its shortest-lived cell; "
        "applications are chosen on the life at the lower 90 % bound",
    ]
    if not summary.get("range_check", False):
        lines.append("- no out-of-distribution check: the run holds no training ranges "
                     f"(`{ranges.RANGES_FILE}`, a run trained before they were recorded)")
    else:
        k = summary["num_out_of_distribution"]
        lines.append(f"- out of the training distribution: {k} of {summary['num_cells']} cells "
                     f"(`in_distribution` in cells.csv; a range is widened by {ranges.MARGIN:.0%} "
                     "of its width)" + (":" if k else ""))
        lines += [f"  - {w}" for w in summary["out_of_distribution"]]
    if "cells_with_truth" in summary:
        lines.append(f"- files holding their own later life: {summary['cells_with_truth']}; "
                     f"life MAPE {summary['life_mape_pct']:.1f} %, 90 % interval coverage "
                     f"{100 * summary['life_picp90']:.0f} %")
    lines += ["", "| group | size | life (cycles) | lower 90 % | upper 90 % | capacity spread (Ah) | "
              "application |", "|---:|---:|---:|---:|---:|---:|---|"]
    for r in groups.itertuples():
        lines.append(f"| {r.group} | {r.size} | {r.predicted_life_cycles:.0f} | {r.life_lower90:.0f} | "
                     f"{r.life_upper90:.0f} | {r.capacity_spread_ah:.4f} | {r.application} |")
    lines += ["", *(f"![{f}]({f})" for f in figures), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ report
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_group_trajectories(cells: pd.DataFrame, preds: list[CellPrediction], out: Path,
                            end_ah: float) -> str:
    """One panel per group: each cell's predicted trajectory with its 90 % band (and the
    file's own later capacities, where it holds them)."""
    plt = _plt()
    groups = sorted(cells.group.unique())
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False,
                             sharey=True)
    for ax, g in zip(axes.ravel(), groups, strict=False):
        for i in np.flatnonzero(cells.group.to_numpy() == g):
            p = preds[i]
            x = p.measured_cycle + np.arange(1, len(p.trajectory) + 1)
            line, = ax.plot(x, p.trajectory, lw=1)
            ax.fill_between(x, p.lower_ah, p.upper_ah, color=line.get_color(), alpha=0.15, lw=0)
            if p.truth.size:
                ax.plot(p.measured_cycle + np.arange(1, p.truth.size + 1), p.truth, ":",
                        color=line.get_color(), lw=0.8)
        ax.axhline(end_ah, color="k", lw=0.6, ls="--")
        ax.set_title(f"group {g}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(groups):]:
        ax.axis("off")
    fig.supxlabel("cycle", fontsize=8)
    fig.supylabel("capacity (Ah)", fontsize=8)
    fig.suptitle("predicted trajectories, 90 % bands (dotted: measured later)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "trajectories_by_group.png", dpi=110)
    plt.close(fig)
    return "trajectories_by_group.png"


def draw_parity(cells: pd.DataFrame, out: Path) -> str | None:
    """Predicted vs true remaining life with intervals, for files that hold the truth."""
    known = cells.dropna(subset=["true_life_cycles"])
    if known.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    yerr = np.stack([known.predicted_life_cycles - known.life_lower90,
                     known.life_upper90 - known.predicted_life_cycles])
    ax.errorbar(known.true_life_cycles, known.predicted_life_cycles, yerr=yerr, fmt="o", ms=3,
                elinewidth=0.6, capsize=0)
    hi = float(max(known.true_life_cycles.max(), known.life_upper90.max()))
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set_xlabel("true remaining life (cycles)")
    ax.set_ylabel("predicted (90 % interval)")
    ax.set_title(f"life parity, {len(known)} cells", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "life_parity.png", dpi=110)
    plt.close(fig)
    return "life_parity.png"


def draw_assignment(groups: pd.DataFrame, out: Path) -> str:
    """Bar per group: predicted life at the lower bound, coloured by its application."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(groups)), 3.2))
    apps = list(dict.fromkeys(groups.application))
    colors = {a: plt.cm.tab10(i % 10) for i, a in enumerate(apps)}
    ax.bar(groups.group.astype(str), groups.life_lower90,
           color=[colors[a] for a in groups.application])
    for a in apps:
        ax.bar([], [], color=colors[a], label=a)
    ax.set_xlabel("group")
    ax.set_ylabel("life at lower 90 % bound (cycles)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "assignment.png", dpi=110)
    plt.close(fig)
    return "assignment.png"
