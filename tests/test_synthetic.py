"""Tests of the built-in synthetic cohort (slbjax.data.synthetic)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from slbjax.data.cells import QV_POINTS, Cell
from slbjax.data.synthetic import (
    RELAX_TIMES_MIN,
    VOLTAGE_GRID,
    cohort_split,
    generate_cohort,
)
from slbjax.errors import ConfigError

ARRAYS = ("cycle", "qv", "charge_current", "discharge_current", "temperature", "capacity_ah")


@pytest.fixture(scope="module")
def cohort() -> list[Cell]:
    return generate_cohort(60, seed=7)


@pytest.fixture(scope="module")
def single_stage() -> list[Cell]:
    """300 cells with one constant load each, for the load-effect properties."""
    return generate_cohort(300, seed=11, max_stages=1)


def _same(a: Cell, b: Cell) -> bool:
    return (
        a.name == b.name
        and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ARRAYS)
        and all(np.array_equal(x, y) for x, y in zip(a.relaxation, b.relaxation, strict=True))
    )


def test_same_seed_gives_identical_cells(cohort):
    again = generate_cohort(60, seed=7)
    assert all(_same(a, b) for a, b in zip(cohort, again, strict=True))


def test_different_seed_gives_different_cells(cohort):
    other = generate_cohort(60, seed=8)
    assert not any(
        np.array_equal(a.capacity_ah, b.capacity_ah) for a, b in zip(cohort, other, strict=True)
    )
    assert not np.array_equal(cohort[0].qv[0], other[0].qv[0])


def test_cell_does_not_depend_on_cohort_size(cohort):
    small = generate_cohort(5, seed=7)
    assert all(_same(a, b) for a, b in zip(small, cohort[:5], strict=False))


def test_schema_matches_cell_docstring(cohort):
    assert [c.name for c in cohort] == [f"SYN-{i:04d}" for i in range(60)]
    for c in cohort:
        n = c.num_cycles
        assert 120 <= n <= 400
        assert c.dataset == "synthetic" and c.source == "synthetic" and c.notes == ()
        assert c.cycle.dtype == np.int64 and np.array_equal(c.cycle, np.arange(1, n + 1))
        assert c.qv.shape == (n, QV_POINTS) and c.qv.dtype == np.float64
        assert c.voltage_grid.shape == (QV_POINTS,)
        np.testing.assert_allclose(c.voltage_grid, np.linspace(3.6, 4.15, 50))
        assert len(c.relaxation) == n
        assert all(
            r.shape == (RELAX_TIMES_MIN.size,) and r.dtype == np.float64 for r in c.relaxation
        )
        for f in ("charge_current", "discharge_current", "temperature", "capacity_ah"):
            arr = getattr(c, f)
            assert arr.shape == (n,) and arr.dtype == np.float64 and np.isfinite(arr).all(), f
        assert c.valid.shape == (n,) and c.valid.dtype == bool and c.valid.all()
        assert set(np.unique(c.charge_current)) <= {0.25, 0.5, 1.0}
        assert set(np.unique(c.discharge_current)) <= {0.5, 1.0, 2.0}
        assert set(np.unique(c.temperature)) <= {25.0, 35.0, 45.0}
        assert c.load.shape == (n, 3)


def test_load_changes_in_stages(cohort):
    changes = [int((np.abs(np.diff(c.load, axis=0)).sum(axis=1) > 0).sum()) for c in cohort]
    assert max(changes) <= 2  # max_stages=3 by default
    assert sum(ch > 0 for ch in changes) > 20  # many cells see a change of duty


def test_capacity_fades_within_a_sensible_range(cohort):
    first = np.array([c.capacity_ah[0] for c in cohort])
    last = np.array([c.capacity_ah[-1] for c in cohort])
    assert np.all((first > 2.9) & (first < 3.5))
    assert np.all(last / first < 0.95) and np.all(last / first > 0.45)
    ended_early = np.array([c.num_cycles < 400 for c in cohort])
    assert ended_early.mean() > 0.5
    # cells stopped by the end-of-life rule end at 70-80 % of their first capacity
    assert np.median((last / first)[ended_early]) == pytest.approx(0.75, abs=0.05)
    trend = [np.corrcoef(c.cycle, c.capacity_ah)[0, 1] for c in cohort]
    assert np.mean(np.array(trend) < -0.8) > 0.9


def test_noise_free_constant_load_capacity_is_monotone():
    for c in generate_cohort(20, seed=3, max_stages=1, noise=0.0):
        assert np.all(np.diff(c.capacity_ah) <= 1e-9)
        assert np.all(np.diff(c.qv, axis=1) >= 0)
        assert np.all(np.diff(np.stack(c.relaxation), axis=1) < 0)  # relaxing downwards


def test_qv_curves_monotone_rebased_and_follow_capacity(cohort, single_stage):
    for c in cohort:
        assert np.all(c.qv[:, 0] == 0.0)
        assert np.all(np.diff(c.qv, axis=1) >= 0)
        assert np.all((c.qv[:, -1] > 0.8) & (c.qv[:, -1] < 2.5))
    # under a constant load the end value falls with the capacity
    corr = [np.corrcoef(c.qv[:, -1], c.capacity_ah)[0, 1] for c in single_stage]
    assert np.mean(np.array(corr) > 0.8) > 0.9
    drop = [c.qv[0, -1] - c.qv[-1, -1] for c in single_stage]
    assert np.mean(np.array(drop) > 0.05) > 0.9
    # and the shape changes, not only the scale: the mid-curve share moves
    c = max(single_stage, key=lambda c: c.capacity_ah[0] - c.capacity_ah[-1])
    share = c.qv[:, 25] / c.qv[:, -1]
    assert abs(share[-1] - share[0]) > 0.01


def test_relaxation_values(cohort):
    v = np.concatenate([np.stack(c.relaxation) for c in cohort])
    assert v.min() > 4.05 and v.max() < 4.2
    assert np.all(v[:, 0] > v[:, -1])


def test_harsher_load_fades_faster(single_stage):
    fade = np.array([1.0 - c.capacity_ah[99] / c.capacity_ah[0] for c in single_stage])
    load = np.array([c.load[0] for c in single_stage])  # [C, 3]: I_c, I_d, T
    for col, low, high in ((0, 0.25, 1.0), (1, 0.5, 2.0), (2, 25.0, 45.0)):
        assert fade[load[:, col] == high].mean() > fade[load[:, col] == low].mean() + 0.01
    # the same holds for fade per cycle over the whole recorded life
    rate = np.array(
        [(1 - c.capacity_ah[-1] / c.capacity_ah[0]) / c.num_cycles for c in single_stage]
    )
    assert rate[load[:, 2] == 45.0].mean() > rate[load[:, 2] == 25.0].mean()


def test_cohort_split_is_deterministic_by_index():
    cells = generate_cohort(40, seed=1, min_cycles=60, max_cycles=80)
    train, val, test = cohort_split(cells)
    names = [c.name for c in train + val + test]
    assert sorted(names) == sorted(c.name for c in cells)
    assert len(test) in (5, 6, 7) and len(val) in (5, 6, 7)
    assert [c.name for c in cohort_split(cells)[2]] == [c.name for c in test]
    # a cell's role does not change when the cohort grows
    _, val_small, test_small = cohort_split(cells[:15])
    assert {c.name for c in test_small} <= {c.name for c in test}
    assert {c.name for c in val_small} <= {c.name for c in val}
    assert cohort_split(cells, val_fraction=0.0, test_fraction=0.0)[0] == cells
    with pytest.raises(ConfigError):
        cohort_split(cells, val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_cells": 0},
        {"seed": -1},
        {"min_cycles": 300, "max_cycles": 200},
        {"max_stages": 0},
        {"eol_fraction": (0.8, 0.7)},
        {"charge_rates": ()},
        {"discharge_rates": (0.0,)},
        {"noise": -1.0},
    ],
)
def test_bad_arguments_raise_config_error(kwargs):
    args = {"num_cells": 2, "seed": 0} | kwargs
    with pytest.raises(ConfigError):
        generate_cohort(args.pop("num_cells"), args.pop("seed"), **args)


def test_two_thousand_cells():
    start = time.perf_counter()
    cells = generate_cohort(2000, seed=0)
    print(
        f"\n2000 synthetic cells, {sum(c.num_cycles for c in cells)} cycles: "
        f"{time.perf_counter() - start:.2f} s"
    )
    assert len(cells) == 2000 and cells[-1].name == "SYN-1999"
    assert VOLTAGE_GRID.shape == (QV_POINTS,)


def test_train_fraction_keeps_a_fixed_subset_of_training_cells():
    import dataclasses

    from slbjax.configs.imoe import ImoeConfig, ImoeData
    from slbjax.data.imoe_inputs import load_cells

    base = ImoeConfig(data=ImoeData(dataset="synthetic", synthetic_cells=40))
    full = load_cells(base, None)
    part_cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, train_fraction=0.4))
    part = load_cells(part_cfg, None)
    n = len(full.train)
    assert len(part.train) == round(0.4 * n)
    names = [c.name for c in part.train]
    assert set(names) < {c.name for c in full.train}
    # validation and test cells are untouched, and the subset does not depend on train.seed
    assert [c.name for c in part.val] == [c.name for c in full.val]
    assert [c.name for c in part.test] == [c.name for c in full.test]
    reseeded = dataclasses.replace(part_cfg, train=dataclasses.replace(part_cfg.train, seed=7))
    assert [c.name for c in load_cells(reseeded, None).train] == names
    other = dataclasses.replace(part_cfg, data=dataclasses.replace(part_cfg.data, fraction_seed=1))
    assert [c.name for c in load_cells(other, None).train] != names
    assert any("data access" in note for note in part.notes)
    bad = dataclasses.replace(base, data=dataclasses.replace(base.data, train_fraction=0.0))
    with pytest.raises(ConfigError, match="train_fraction"):
        bad.validate()
