"""Cartesian sweeps: ``slbjax sweep EXPERIMENT --grid key=v1,v2 ...``.

Points whose configs differ only in values that do not change array shapes
(for iMOE: seed, learning rate, loss weights; see
``slbjax.runners.imoe.BATCHABLE``) are trained together as members of one
jit-compiled, vmapped program; every other difference (expert count, top-k,
hidden size, horizon, data settings) compiles once per distinct shape.

Layout of a sweep folder::

    sweep.json        experiment, grid and base overrides
    sweep.csv         one row per point: its grid values and metrics
    sweep.png         the main metric against the first non-seed grid key (mean +- std over seeds)
    points/<name>/    an ordinary run folder per point (reloadable with load_run)

A point whose folder already holds the same config and a metrics.json is
reused, not recomputed, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slbjax import config as cfglib
from slbjax import rundir, runners
from slbjax.errors import ConfigError

MAIN_METRICS = ("test_mape_pct", "interp_soh_mape_generated_pct")


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["model.num_experts=4,5"]`` -> ``[("model.num_experts", ["4", "5"])]``."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise ConfigError(f"--grid {item!r} is not of the form section.key=v1,v2,...")
        grid.append((key.strip(), vals))
    keys = [k for k, _ in grid]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--grid names a key twice: {keys}")
    return grid


def experiment_grid(module: Any, smoke: bool) -> list[tuple[str, list[str]]]:
    """The grid an experiment module declares (``grid(smoke)``, typed values), as override text."""
    declared = getattr(module, "grid", None)
    return [(k, [cfglib.as_text(x) for x in v]) for k, v in declared(smoke).items()] if declared else []


def merge_grids(
    declared: list[tuple[str, list[str]]], given: list[tuple[str, list[str]]]
) -> list[tuple[str, list[str]]]:
    """``given`` keys replace the declared values of the same key; new keys follow.

    Raises:
      ConfigError: if the result is empty (nothing to sweep).
    """
    given_map = dict(given)
    merged = [(k, given_map.pop(k, v)) for k, v in declared]
    merged += [(k, v) for k, v in given if k in given_map]
    if not merged:
        raise ConfigError("nothing to sweep: give --grid section.key=v1,v2,... "
                          "(this experiment declares no grid of its own)")
    return merged


def expand(base: Any, grid: list[tuple[str, list[str]]]) -> list[tuple[dict[str, str], Any]]:
    """Every point of the grid as (its grid values, its validated config)."""
    points = []
    for combo in itertools.product(*(vals for _, vals in grid)):
        values = {k: v for (k, _), v in zip(grid, combo, strict=True)}
        cfg = cfglib.apply_overrides(base, [f"{k}={v}" for k, v in values.items()])
        points.append((values, cfg))
    return points


def point_name(values: dict[str, str]) -> str:
    """A folder name such as ``num_experts=4_seed=0``."""
    parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", "_".join(parts)) or "base"


def groups_of(runner, cfgs: list[Any]) -> list[list[int]]:
    """Indices of points that can share one program (by the runner's shape signature)."""
    sig = getattr(runner, "shape_signature", None)
    if sig is None or not hasattr(runner, "train_and_evaluate_group"):
        return [[i] for i in range(len(cfgs))]
    out: dict[str, list[int]] = {}
    for i, c in enumerate(cfgs):
        out.setdefault(sig(c), []).append(i)
    return list(out.values())


def run_sweep(
    experiment: str,
    base: Any,
    grid: list[tuple[str, list[str]]],
    data_dir: Path | None,
    workdir: Path,
    base_overrides: list[str] | None = None,
) -> pd.DataFrame:
    """Runs (or reuses) every grid point and writes sweep.csv / sweep.png."""
    points = expand(base, grid)
    workdir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(workdir / "sweep.json", {
        "experiment": experiment, "grid": dict(grid), "set": base_overrides or [],
    })
    names = [point_name(v) for v, _ in points]
    todo = [rundir.RunPoint(experiment, c, workdir / "points" / n)
            for n, (_, c) in zip(names, points, strict=True)]
    groups = groups_of(runners.for_config(base), [c for _, c in points])
    print(f"sweep: {len(points)} points, at most {len(groups)} program(s)", file=sys.stderr, flush=True)
    metrics, reused = rundir.execute(todo, data_dir, log=lambda m: print(f"sweep: {m}", file=sys.stderr,
                                                                          flush=True))
    print(f"sweep: {len(points)} points; {sum(reused)} reused", file=sys.stderr)
    rows = [
        {"point": n, **values, **m}
        for n, (values, _), m in zip(names, points, metrics, strict=True)
    ]
    table = pd.DataFrame(rows)
    table.to_csv(workdir / "sweep.csv", index=False)
    try:
        plot_sweep(table, [k for k, _ in grid], workdir / "sweep.png")
    except Exception as e:  # the table is written; a figure is not worth failing the sweep
        print(f"sweep: note: sweep.png not drawn ({type(e).__name__}: {e})", file=sys.stderr)
    return table


LABELS = {
    "model.num_experts": "number of experts",
    "model.top_k": "experts per sample (top-k)",
    "model.hidden": "hidden units",
    "model.arch": "architecture",
    "model.gate": "gate",
    "model.router": "router",
    "data.horizon": "prediction horizon (cycles)",
    "data.train_fraction": "fraction of training cells",
    "data.soc_start": "initial SOC (%)",
    "data.condition": "condition",
    "train.learning_rate": "learning rate",
    "train.seed": "seed",
    "train.ensemble_size": "ensemble size",
    "train.epochs": "epochs",
    "test_mape_pct": "test MAPE (%)",
    "interp_soh_mape_generated_pct": "SOH MAPE, generated features, interpolation (%)",
}
"""Axis labels of grid keys and metrics; others: :func:`axis_label`."""


def axis_label(key: str) -> str:
    """A readable label: ``LABELS`` or ``section.some_key`` -> ``some key`` (``_pct`` -> ``(%)``)."""
    if key in LABELS:
        return LABELS[key]
    name = key.rsplit(".", 1)[-1]
    pct = name.endswith("_pct")
    name = name[: -len("_pct")] if pct else name
    return name.replace("_", " ") + (" (%)" if pct else "")


def _is_replicate(key: str) -> bool:
    """Seeds: grid keys whose values repeat a run, averaged over in the figure."""
    name = key.rsplit(".", 1)[-1]
    return name == "seed" or name.endswith("_seed")


def _axis_values(column: pd.Series) -> tuple[str, list]:
    """("int" | "float" | "category", the distinct values in plotting order)."""
    seen = list(dict.fromkeys(column.tolist()))
    text = [str(v).strip() for v in seen]
    if all(re.fullmatch(r"[+-]?\d+", t) for t in text):
        return "int", sorted(int(t) for t in text)
    try:
        return "float", sorted(float(t) for t in text)
    except ValueError:
        return "category", seen


def _number(v: float) -> str:
    """``2``, ``0.001``, ``150``: never an exponent or an offset."""
    if float(v).is_integer():
        return str(int(v))
    return np.format_float_positional(float(v), precision=6, unique=True, trim="-")


def plot_sweep(table: pd.DataFrame, keys: list[str], path: Path | None = None):
    """Main metric against the first non-seed grid key: mean +- std over the seeds.

    One line per combination of the other non-seed keys (at most eight; more
    are averaged over, as the title says).  Integer keys get ticks at their
    values only, strings are categories, numbers spanning decades a log axis;
    neither axis uses offset or scientific notation, and the y range is never
    narrower than 5 % of the metric so that a negligible difference does not
    look like a trend.  The title says when the differences between values lie
    within the spread over seeds.  Writes ``path`` when given; returns the
    figure (None when the table holds no main metric).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    metric = next((m for m in MAIN_METRICS if m in table.columns and table[m].notna().any()), None)
    if metric is None or not keys:
        return None
    x = next((k for k in keys if not _is_replicate(k)), keys[0])
    seeds = [k for k in keys if _is_replicate(k) and k != x]
    others = [k for k in keys if k not in seeds and k != x]
    table = table.assign(**{metric: pd.to_numeric(table[metric], errors="coerce")})
    kind, values = _axis_values(table[x])
    key_of = {v: v for v in values} if kind == "category" else {
        v: (int(v) if kind == "int" else float(v)) for v in dict.fromkeys(table[x].tolist())}
    xcol = table[x].map(lambda v: key_of.get(v, v))
    series_keys = others
    combos = table.groupby(others, sort=False).ngroups if others else 1
    if combos > 8:
        series_keys = []
    averaged = [axis_label(k) for k in others if k not in series_keys]

    fig = Figure(figsize=(5.4, 3.8))
    ax = fig.subplots()
    pos = {v: i for i, v in enumerate(values)} if kind == "category" else {v: v for v in values}
    groups = table.assign(_x=xcol).groupby(series_keys, sort=False) if series_keys else [((), table.assign(_x=xcol))]
    means, stds, runs = [], [], []
    for label, part in groups:
        stats = part.groupby("_x", sort=False)[metric].agg(["mean", "std", "count"])
        stats = stats.reindex([v for v in values if v in stats.index])
        xs = [pos[v] for v in stats.index]
        name = None
        if series_keys:
            label = label if isinstance(label, tuple) else (label,)
            name = ", ".join(f"{axis_label(k)} {v}" for k, v in zip(series_keys, label, strict=True))
        ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", ms=4, capsize=3,
                    label=name, linestyle="none" if kind == "category" else "-")  # no order to draw
        means.append(stats["mean"])
        stds += [s for s in stats["std"] if pd.notna(s)]
        runs.append(int(stats["count"].max()))
    if kind == "category":
        ax.set_xticks(range(len(values)), [str(v) for v in values], fontsize=8)
        ax.set_xlim(-0.5, len(values) - 0.5)
    else:
        positive = all(v > 0 for v in values)
        if positive and len(values) > 2 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        if len(values) <= 12:  # ticks at the swept values, written as numbers
            ax.set_xticks(values, [_number(v) for v in values])
        else:
            if kind == "int":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _number(v)))
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    # never zoom a negligible difference into a slope
    lo, hi = ax.get_ylim()
    level = max(abs(lo), abs(hi))
    if hi - lo < 0.05 * level:
        mid = 0.5 * (lo + hi)
        ax.set_ylim(mid - 0.025 * level, mid + 0.025 * level)
    ax.tick_params(labelsize=8)
    ax.set_xlabel(axis_label(x), fontsize=9)
    ax.set_ylabel(axis_label(metric), fontsize=9)
    if series_keys:
        ax.legend(fontsize=7)

    n = max(runs)
    over = f"mean ± std over {n} seeds" if n > 1 else "one run per value: no seed spread to judge differences by"
    if averaged:
        over = f"mean ± std over seeds and {', '.join(averaged)}"
    ranges = [float(m.max() - m.min()) for m in (m.dropna() for m in means) if len(m) > 1]
    if stds and ranges:
        diff = max(ranges)  # along x, within each line
        spread = float(np.sqrt(np.mean(np.square(stds))))
        if diff <= spread:
            over += f"; differences within the seed spread (range {diff:.2g}, std {spread:.2g})"
    lines = [f"{axis_label(metric)} vs {axis_label(x)}", over]
    ax.set_title("\n".join(lines), fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
