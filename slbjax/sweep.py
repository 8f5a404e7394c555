"""Cartesian sweeps: ``slbjax sweep EXPERIMENT --grid key=v1,v2 ...``.

Points whose configs differ only in values that do not change array shapes
(for iMOE: seed, learning rate, loss weights; see
``slbjax.runners.imoe.BATCHABLE``) are trained together as members of one
jit-compiled, vmapped program; every other difference (expert count, top-k,
hidden size, horizon, data settings) compiles once per distinct shape.

Layout of a sweep folder::

    sweep.json        experiment, grid and base overrides
    sweep.csv         one row per point: its grid values and metrics
    sweep.png         the main metric against the first grid key (mean +- std over seeds)
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
    plot_sweep(table, [k for k, _ in grid], workdir / "sweep.png")
    return table


def plot_sweep(table: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Main metric against the first non-seed grid key, mean +- std over the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next((m for m in MAIN_METRICS if m in table.columns), None)
    if metric is None:
        return
    x = next((k for k in keys if not k.endswith(".seed")), keys[0])
    stats = table.groupby(x)[metric].agg(["mean", "std", "count"]).reset_index()
    try:
        xs = stats[x].astype(float)
    except ValueError:
        xs = stats[x].astype(str)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} (mean +- std over {int(stats['count'].max())} run(s) per value)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
