"""The files of a generative SOH run: ``report.md`` (every case and variant next to the
paper's figures) and its CSV tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from slbjax.configs.cvae import CvaeConfig
from slbjax.data.pulse import PulseData
from slbjax.data.pulse_cases import CasePlan

# NMC 2.1 Ah figures quoted for comparison
PAPER_REFERENCE_NMC21AH = {
    "interp_soh_mape_generated_pct": 4.4,
    "extrap_soh_mape_generated_pct": 6.0,
    "case3_soh_mape_measured_pct": 17.3,
    "case7_soh_mape_measured_pct": 23.8,
}
AUTHORS_CODE_NMC21AH = {  # the authors' code run on these workbooks (TensorFlow, CPU)
    "interp_soh_mape_generated_pct": 4.54,
    "extrap_soh_mape_generated_pct": 4.28,
    "soh_mape_measured_pct_mean": 17.13,
    "seconds_8_cases": 105.0,
}


def write_table(path: Path, rows: list[dict]) -> None:
    """Writes ``rows`` (dicts with the same keys) as CSV, floats with 6 significant digits.

    Nothing is written when ``rows`` is empty.
    """
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def fmt(x: float | None, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, or a dash when it is missing or not finite."""
    return (
        "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"
    )


def write_report(
    path: Path,
    cfg: CvaeConfig,
    data: PulseData,
    plans: list[CasePlan],
    metrics: dict[str, float],
) -> None:
    """Writes ``report.md``: the per-case table of every variant next to the paper's figures.

    Args:
      path: the file to write.
      cfg: the run's config.
      data: the rows the run used.
      plans: its cases (rows of the table).
      metrics: its flat metrics (:mod:`slbjax.evaluate.cvae_summary` keys and
        the run's timings).
    """
    m = metrics.get
    lines = [
        f"# CVAE generative SOH estimation — {data.battery}",
        "",
        f"Data: `{data.source}`{' sheet ' + repr(data.sheet) if data.sheet else ''}, "
        f"{data.num_rows} rows with SOC <= 50 %, {len(set(data.cell.tolist()))} physical cells. "
        f"Ensemble size: {cfg.train.ensemble_size}; epochs {cfg.train.epochs}, "
        f"batch {cfg.train.batch_size}, learning rate {cfg.train.learning_rate:g}.",
        f"Training: {fmt(m('train_seconds'), 1)} s for {int(m('num_members', 0))} members in one "
        f"program (compile {fmt(m('train_compile_seconds'), 1)} s); evaluation "
        f"{fmt(m('evaluate_seconds'), 1)} s.",
        "",
        "SOH MAPE in %, mean over the unseen SOC levels of each case. Phase 1: forest on the "
        "measured rows at the training SOC levels. Phase 2: forest on generated rows. Paper "
        "protocol = generation conditioned on the test rows' true SOH; honest = SOH drawn from "
        "the training rows. Cases 4-7: authors_shift (the authors' code) and eq89 (the paper's "
        "Methods eq. 8-9). Generation MAPE: row-paired (paper protocol) / quantile-matched (honest).",
        "",
        "| case | train SOC % | phase 1 | phase 2 paper | phase 2 eq89 | phase 2 honest | "
        "honest eq89 | gen MAPE | gen MAPE eq89 | gen MAPE honest | KL |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for plan in plans:
        k = plan.case
        lines.append(
            f"| {k} | {', '.join(f'{x:g}' for x in plan.train_soc_pct)} "
            f"| {fmt(m(f'case{k}_soh_mape_measured_pct'))} "
            f"| {fmt(m(f'case{k}_soh_mape_generated_pct'))} "
            f"| {fmt(m(f'case{k}_soh_mape_generated_pct_eq89'))} "
            f"| {fmt(m(f'case{k}_soh_mape_generated_pct_honest'))} "
            f"| {fmt(m(f'case{k}_soh_mape_generated_pct_eq89_honest'))} "
            f"| {fmt(m(f'case{k}_generation_mape_pct'))} "
            f"| {fmt(m(f'case{k}_generation_mape_pct_eq89'))} "
            f"| {fmt(m(f'case{k}_generation_mape_pct_honest'))} "
            f"| {fmt(m(f'case{k}_generation_kl'), 3)} |"
        )
    for group, label in (("interp", "mean 0-3"), ("extrap", "mean 4-7")):
        lines.append(
            f"| {label} | | {fmt(m(f'{group}_soh_mape_measured_pct'))} "
            f"| {fmt(m(f'{group}_soh_mape_generated_pct'))} "
            f"| {fmt(m(f'{group}_soh_mape_generated_pct_eq89'))} "
            f"| {fmt(m(f'{group}_soh_mape_generated_pct_honest'))} "
            f"| {fmt(m(f'{group}_soh_mape_generated_pct_eq89_honest'))} "
            f"| {fmt(m(f'{group}_generation_mape_pct'))} "
            f"| {fmt(m(f'{group}_generation_mape_pct_eq89'))} "
            f"| {fmt(m(f'{group}_generation_mape_pct_honest'))} "
            f"| {fmt(m(f'{group}_generation_kl'), 3)} |"
        )
    if data.battery == "NMC2.1":
        p, a = PAPER_REFERENCE_NMC21AH, AUTHORS_CODE_NMC21AH
        lines += [
            "",
            "Reference (NMC 2.1 Ah): the paper reports phase-2 SOH MAPE "
            f"{p['interp_soh_mape_generated_pct']} % (interpolation) and "
            f"{p['extrap_soh_mape_generated_pct']} % (extrapolation), phase 1 "
            f"{p['case3_soh_mape_measured_pct']} % in case 3 and {p['case7_soh_mape_measured_pct']} % "
            "in case 7, generation MAPE below 2 % in interpolation. The authors' code run on "
            f"these workbooks gives {a['interp_soh_mape_generated_pct']} % / "
            f"{a['extrap_soh_mape_generated_pct']} % (phase 2) and {a['soh_mape_measured_pct_mean']} % "
            f"(phase 1, mean of the 8 cases) in {a['seconds_8_cases']:g} s.",
        ]
    if data.notes:
        lines += ["", "Notes: " + " ".join(data.notes)]
    path.write_text("\n".join(lines) + "\n")
