"""What an iMOE-family run trains on: cells by role, windows, normalisers, batches.

:func:`load_cells` reads the cells of each role (train / val / test) for any
dataset; :func:`windows_for` cuts them into samples; :func:`prepare` fits the
normalisers and the output scaling on the training windows alone and turns
every role into model-ready float32 :class:`~slbjax.data.windows.Batch` arrays.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from slbjax.configs.imoe import ImoeConfig
from slbjax.data.cells import Cell
from slbjax.data.features import Normaliser
from slbjax.data.imoe_files import load_split
from slbjax.data.synthetic import NOMINAL_AH, cohort_split, generate_cohort
from slbjax.data.windows import Batch, Windows, build_windows
from slbjax.paths import require_data_dir

NOMINAL_CAPACITY_AH = {
    ("UL", "NCA"): 3.5,  # Huang, Tao et al. 2026, Methods: 3500 mAh NCA and NCM cells
    ("UL", "NCM"): 3.5,
    ("UL", "NCMNCA"): 2.5,  # 2500 mAh blended cells
    ("LSD", ""): 2.4,  # 2.4 Ah NCM523 cells (second life starts near 80 %)
    ("TPSL", ""): 2.4,
    ("synthetic", ""): NOMINAL_AH,
}
"""Rated capacity (Ah) by (dataset, UL subset): SOH = capacity / rated capacity."""


def nominal_capacity_ah(cfg: ImoeConfig) -> float:
    """Rated capacity of the config's cells (the SOH denominator)."""
    d = cfg.data
    return NOMINAL_CAPACITY_AH[(d.dataset, d.subset if d.dataset == "UL" else "")]


@dataclasses.dataclass
class Splits:
    train: list[Cell]
    val: list[Cell]
    test: list[Cell]
    notes: list[str]

    @property
    def warnings(self) -> list[str]:
        """The cells' warnings (legal but unusual values), in role order."""
        return [w for c in (*self.train, *self.val, *self.test) for w in c.warnings]


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
    batches = {role: to_batch(w, norm, load_norm) for role, w in wins.items() if has_windows(w)}
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
    from slbjax.models.trajectory import build_model

    return build_model(cfg, p.t_mean, p.t_std), p.batches["train"], p.batches["val"]


def has_windows(w: Windows | None) -> bool:
    return w is not None and len(w) > 0
