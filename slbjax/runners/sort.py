"""Runner of the consistency-grouping experiment (Wang, Gao, Tian 2025, "deep sorting").

One run, on the 86 cells of ``sorting/`` (see :mod:`slbjax.data.sorting`):

1. the published method (:func:`slbjax.decide.grouping.deep_sort`) with the
   configured seed, and with seeds 0 .. ``num_seeds`` - 1 for its spread;
2. baselines scored the same way: k-means on the six informative explicit
   columns and on ``capacity`` alone (same seeds), random partitions with the
   configured seed's second-refinement group sizes (seed s draws partition s),
   and the oracle (cells sorted by true life, 8 near-equal groups);
3. writes ``groups.csv`` (cell, group 1..G: second refinement, configured
   seed), ``methods.csv`` (one row per method or step) and ``seeds.csv`` (one
   row per seed), and returns the flat metrics.

Metric names: ``<method>_<metric>`` at the configured seed, ``_median``,
``_p05``, ``_p95`` over the seeds, and ``<method>_<metric>[_median]_share_of_oracle_gain``
= (value - random median) / (oracle - random median).  Methods are the
steps ``initial``, ``first_refinement``, ``second_refinement`` and
``explicit_kmeans``, ``capacity_kmeans``, ``random``, ``oracle``; metrics are
``lifetime_cycles``, ``aging_difference`` (Ah cycles), ``capacity_utilisation``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from slbjax.configs.sort import SortConfig
from slbjax.data.sorting import INFORMATIVE_EXPLICIT, SortingData, load_sorting
from slbjax.decide import grouping
from slbjax.errors import ConfigError
from slbjax.paths import require_data_dir

METRICS = ("lifetime_cycles", "aging_difference", "capacity_utilisation")
SEEDED = (*grouping.STEPS, "explicit_kmeans", "capacity_kmeans", "random")
METHODS = (*SEEDED, "oracle")
EXPLICIT_FEATURES = INFORMATIVE_EXPLICIT
SPREAD = {"median": 50.0, "p05": 5.0, "p95": 95.0}
# The authors' published values (metric pickles; data README section 4).
PUBLISHED = {
    "initial": {"aging_difference": 61.720583, "lifetime_cycles": 285.186047,
                "capacity_utilisation": 0.679728},
    "first_refinement": {"aging_difference": 45.274383, "lifetime_cycles": 320.709302,
                         "capacity_utilisation": 0.753801},
    "second_refinement": {"aging_difference": 44.617586, "lifetime_cycles": 333.732558,
                          "capacity_utilisation": 0.780580},
}


CONFIG_CLASS = SortConfig


def _log(msg: str) -> None:
    print(f"[sort] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ scoring
def partitions(cfg: SortConfig, data: SortingData, seed: int,
               sizes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{method: [N] labels} of every seeded method at ``seed``.

    ``sizes`` are the random baseline's group sizes (default: this seed's
    second-refinement sizes).
    """
    s = cfg.sort
    curves = {j: data.curves[j].to_numpy() for j in (1, 2, 3)}
    out = grouping.deep_sort(curves, s.num_groups, seed, s.n_init, s.max_passes)
    out["explicit_kmeans"] = grouping.kmeans_groups(
        data.explicit.loc[:, list(EXPLICIT_FEATURES)].to_numpy(), s.num_groups, seed, s.n_init)
    out["capacity_kmeans"] = grouping.kmeans_groups(
        data.explicit.loc[:, ["capacity"]].to_numpy(), s.num_groups, seed, s.n_init)
    if sizes is None:
        sizes = grouping.group_sizes(out["second_refinement"])
    out["random"] = grouping.random_groups(sizes, seed)
    return out


def score_partition(groups: np.ndarray, data: SortingData, distances: np.ndarray) -> dict[str, float]:
    return {
        "lifetime_cycles": grouping.available_lifetime(groups, data.lives),
        "aging_difference": grouping.aging_difference_from_distances(groups, distances),
        "capacity_utilisation": grouping.capacity_utilisation(groups, data.trajectories),
    }


def seed_tables(cfg: SortConfig, data: SortingData) -> tuple[dict, pd.DataFrame, np.ndarray]:
    """({method: scores, configured seed}, per-seed table, configured second-refinement labels)."""
    s = cfg.sort
    distances = grouping.aging_distances(data.trajectories, s.pad_ah)
    chosen = partitions(cfg, data, s.seed)
    sizes = grouping.group_sizes(chosen["second_refinement"])
    chosen["oracle"] = grouping.oracle_groups(data.lives, s.num_groups)
    at_seed = {m: score_partition(chosen[m], data, distances) for m in METHODS}
    rows = []
    for seed in range(s.num_seeds):
        parts = partitions(cfg, data, seed, sizes)
        row = {"seed": seed}
        for m in SEEDED:
            row.update({f"{m}_{k}": v for k, v in score_partition(parts[m], data, distances).items()})
        rows.append(row)
    return at_seed, pd.DataFrame(rows), chosen["second_refinement"]


def summarise(at_seed: dict, seeds: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """(flat metrics, methods table) from the configured-seed scores and the per-seed table."""
    metrics: dict[str, float] = {}
    for m in METHODS:
        for k in METRICS:
            metrics[f"{m}_{k}"] = at_seed[m][k]
            if m in SEEDED:
                for name, q in SPREAD.items():
                    metrics[f"{m}_{k}_{name}"] = float(np.percentile(seeds[f"{m}_{k}"], q))
    for m in SEEDED[:-1]:  # random is the reference (0) and the oracle the goal (1)
        for k in METRICS:
            ref = (metrics[f"random_{k}_median"], metrics[f"oracle_{k}"])
            for suffix in ("", "_median"):
                metrics[f"{m}_{k}{suffix}_share_of_oracle_gain"] = grouping.share_of_oracle_gain(
                    metrics[f"{m}_{k}{suffix}"], *ref)
    table = pd.DataFrame([
        {"method": m, **{c: metrics.get(f"{m}_{c}", np.nan) for c in
                         [*METRICS, *(f"{k}_{q}" for k in METRICS for q in SPREAD),
                          *(f"{k}_share_of_oracle_gain" for k in METRICS)]}}
        for m in METHODS
    ])
    return metrics, table


def check_inputs(cfg: SortConfig, data_dir: Path | None) -> None:
    """Fails, before a run folder is made, when the tables are missing, do not load or
    hold fewer cells than groups."""
    cfg.validate()
    _load(cfg, data_dir)


def _load(cfg: SortConfig, data_dir: Path | None):
    folder = require_data_dir(data_dir, "sort-deep") / cfg.data.subdir
    data = load_sorting(folder)
    if cfg.sort.num_groups > len(data.cells):
        raise ConfigError(f"sort.num_groups = {cfg.sort.num_groups} exceeds the "
                          f"{len(data.cells)} cells of {folder}")
    return data


def train_and_evaluate(cfg: SortConfig, data_dir: Path | None, run_dir: Path) -> dict[str, float]:
    """Groups the cells, scores every method and writes the tables; returns the flat metrics.

    Args:
      cfg: the experiment config.
      data_dir: folder holding ``<data.subdir>/features.csv`` and
        ``<data.subdir>/capacity_trajectories.csv``.
      run_dir: existing run folder; receives groups.csv, methods.csv and
        seeds.csv (the CLI writes config.json and metrics.json).
    """
    cfg.validate()
    t_start = time.perf_counter()
    data = _load(cfg, data_dir)
    _log(f"{len(data.cells)} cells; seed {cfg.sort.seed} and seeds 0..{cfg.sort.num_seeds - 1}")
    at_seed, seeds, second = seed_tables(cfg, data)
    metrics, table = summarise(at_seed, seeds)

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _, group = np.unique(second, return_inverse=True)
    pd.DataFrame({"cell": data.cells, "group": group + 1}).to_csv(run_dir / "groups.csv", index=False)
    table.to_csv(run_dir / "methods.csv", index=False)
    seeds.to_csv(run_dir / "seeds.csv", index=False)

    published = PUBLISHED["second_refinement"]["lifetime_cycles"]
    metrics.update({
        "num_cells": len(data.cells),
        "num_seeds": cfg.sort.num_seeds,
        "second_refinement_num_groups": len(grouping.group_sizes(second)),
        "published_second_refinement_lifetime_percentile": float(
            100.0 * (seeds["second_refinement_lifetime_cycles"] < published).mean()),
        "sort_seconds": time.perf_counter() - t_start,
    })
    s = metrics
    _log(f"second refinement: lifetime {s['second_refinement_lifetime_cycles']:.2f} cycles, "
         f"aging difference {s['second_refinement_aging_difference']:.2f} Ah cycles "
         f"(seed median {s['second_refinement_lifetime_cycles_median']:.2f} / "
         f"{s['second_refinement_aging_difference_median']:.2f})")
    return metrics
