"""Second-life life prediction: targets by hand, cross-fold conformal coverage, training, runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from slbjax import checkpoint, cli
from slbjax.config import replace
from slbjax.configs.life import LifeConfig
from slbjax.data import life as L
from slbjax.data.cells import Cell
from slbjax.decide import grouping as G
from slbjax.decide.life_run import load_life_run
from slbjax.errors import ConfigError, DataError, RunDirError
from slbjax.evaluate import clusters as C
from slbjax.evaluate import life as E
from slbjax.models.life import LifeMLP
from slbjax.runners import life as R
from slbjax.train import life as T


def _cell(capacity, valid=None, relaxation=True) -> Cell:
    n = len(capacity)
    grid = np.linspace(3.8, 4.1, 50)
    qv = np.tile(np.linspace(0.0, 1.0, 50), (n, 1))
    return Cell(
        name="LSD-0", source="/tmp/0.csv", dataset="LSD", cycle=np.arange(1, n + 1),
        qv=qv, voltage_grid=grid,
        relaxation=tuple(np.linspace(4.19, 4.18, 90) for _ in range(n)) if relaxation else None,
        charge_current=np.full(n, 1.2), discharge_current=np.full(n, 2.4),
        temperature=np.full(n, 25.0), capacity_ah=np.asarray(capacity, np.float64),
        valid=np.ones(n, bool) if valid is None else np.asarray(valid))


# ---------------------------------------------------------------- targets by hand
def test_first_passage_by_hand():
    cap = np.array([2.0, 1.9, 1.8, 1.7, 1.6, 1.5])
    # after row 1 (1.9): 1.8 at +1, 1.65 first reached by 1.6 at +3, 1.5 at +4
    assert L.first_passage(cap, 1, np.array([1.8, 1.65, 1.5])).tolist() == [1, 3, 4]
    # never reached: the record's last row (+4); times never decrease
    assert L.first_passage(cap, 1, np.array([1.55, 1.0])).tolist() == [4, 4]


def test_cell_targets_levels_between_last_capacity_and_end():
    # 1.9 Ah falling 0.05 Ah a cycle; measured rows 0, 1 -> last 1.85; end 1.2 Ah reached
    # 13 cycles later (1.85 - 13 * 0.05 = 1.20)
    cap = 1.9 - 0.05 * np.arange(20)
    remaining, times, c_last = L.cell_targets(_cell(cap), 0, 2, 1.2, 2)
    assert c_last == pytest.approx(1.85)
    assert remaining == 13
    # levels 1.525 (first at or below: 1.50, +7 cycles) and 1.2 (+13)
    assert times.tolist() == [7, 13]
    assert L.levels(np.array([1.85]), 1.2, 2)[0] == pytest.approx([1.525, 1.2])


def test_trajectory_from_times_by_hand():
    # from 1.8 Ah, level 1.6 at cycle 2, level 1.2 at cycle 4, constant after
    q = L.trajectory_from_times(1.8, np.array([1.6, 1.2]), np.array([2.0, 4.0]), 6)
    assert q == pytest.approx([1.7, 1.6, 1.4, 1.2, 1.2, 1.2])


def test_training_starts_and_measurable_errors():
    cap = 1.9 - 0.01 * np.arange(80)  # reaches 1.2 Ah at row 70
    cell = _cell(cap)
    starts = L.training_starts(cell, 10, 1.2, 10, 20)
    # a start s leaves 70 - (s + 9) cycles: >= 20 for s <= 41
    assert starts == [0, 10, 20, 30, 40]
    valid = np.ones(80, bool)
    valid[12] = False
    assert L.training_starts(_cell(cap, valid), 10, 1.2, 10, 20) == [0, 20, 30, 40]  # 10..19 bad
    with pytest.raises(DataError, match=r"file /tmp/0.csv, line 14 \(cycle 13\): unusable"):
        L.arrival_features(_cell(cap, valid), 5, 10)
    with pytest.raises(DataError, match=r"line 77 \(cycle 76\): holds 5 cycle\(s\) from its arrival on; the life model needs 10"):
        L.arrival_features(cell, 75, 10)
    with pytest.raises(DataError, match="no relaxation voltage"):
        L.arrival_features(_cell(cap, relaxation=False), 0, 10)
    assert L.arrival_features(cell, 0, 10).shape == (len(L.FEATURE_NAMES),)


def test_soh_features_read_one_cycle_and_never_the_capacity():
    rng = np.random.default_rng(0)
    cell = _cell(1.9 - 0.01 * np.arange(30))
    cell = Cell(**{**cell.__dict__, "qv": rng.uniform(size=(30, 50)),
                   "relaxation": tuple(4.1 + 0.05 * rng.uniform(size=90) for _ in range(30))})
    x = L.soh_features(cell, [3, 7])
    assert x.shape == (2, len(L.SOH_FEATURE_NAMES)) == (2, 16)
    np.testing.assert_array_equal(x[1, :10], cell.qv[7, list(L.QV_POINTS_USED)])
    assert x[1, 10] == pytest.approx(cell.relaxation[7].mean())
    other = Cell(**{**cell.__dict__, "capacity_ah": cell.capacity_ah * 0.5})
    np.testing.assert_array_equal(L.soh_features(other, [3, 7]), x)  # the answer is no input
    with pytest.raises(DataError, match="no relaxation voltage"):
        L.soh_features(_cell(np.ones(5), relaxation=False), [0])


def test_clusters_by_hand():
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    truth = np.repeat([0, 1, 2], 20)
    x = centres[truth] + rng.normal(scale=0.5, size=(60, 2))
    x = np.concatenate([x, np.ones((60, 1))], axis=1)  # a constant column is dropped
    labels = C.kmeans_labels(x, 3, seed=0)
    assert C.agreement(labels, truth) == pytest.approx(1.0)
    assert C.agreement((labels + 1) % 3, truth) == pytest.approx(1.0)  # names do not matter
    # lives 10, 10 | 100, 1000: log-variance between the two clusters' means, by hand
    lives = np.array([10.0, 10.0, 100.0, 1000.0])
    y = np.log(lives)
    total = np.sum((y - y.mean()) ** 2)
    within = np.sum((y[2:] - y[2:].mean()) ** 2)
    assert C.life_variance_explained(np.array([0, 0, 1, 1]), lives) == pytest.approx(1 - within / total)
    assert C.life_variance_explained(np.array([0, 1, 2, 3]), lives) == pytest.approx(1.0)
    assert C.life_variance_explained(np.zeros(4, int), lives) == pytest.approx(0.0)


def test_scalar_network_learns_soh_and_exposes_its_representation():
    """The SOH estimator is the life network without shape head, in the same core."""
    rng = np.random.default_rng(2)
    n = 300
    x = rng.normal(size=(n, 4))
    soh = 70 + 5 * x[:, 0] - 3 * x[:, 1]
    specs = [T.MemberSpec(np.arange(0, 240), np.arange(240, n), s) for s in (1, 2)]
    net = LifeMLP(hidden=(16, 8), levels=0)
    params, hp, _ = T.fit_members(net, x, soh, np.zeros((n, 0)), np.arange(n), specs, epochs=200,
                                  patience=200, batch_size=32, learning_rate=1e-2,
                                  shape_weight=0.0, weight_decay=0.0, log=lambda s: None)
    pred, shares = T.predict_members(net, params, hp, x)
    assert shares.shape == (2, n, 0)
    assert np.abs(pred[:, 240:] - soh[240:]).mean() < 0.5  # spread of the SOH is ~5.8 points
    hidden = T.embed_members(net, params, hp, x[:5])
    assert hidden.shape == (2, 5, 8) and np.isfinite(hidden).all()


# ---------------------------------------------------------------- conformal, cross-fold
def test_cross_fold_conformal_covers_known_noise():
    """Ensemble spread 3x too small: the normal interval under-covers badly, the
    cross-fold conformal one covers 90 % within binomial error."""
    rng = np.random.default_rng(0)
    n = 4000
    truth_sd = rng.uniform(0.1, 0.5, n)  # heteroscedastic, known
    mu = rng.normal(5.0, 1.0, n)
    truth = mu + truth_sd * rng.standard_t(df=5, size=n) / np.sqrt(5 / 3)
    sd = truth_sd / 3.0
    fold = np.arange(n) % 5
    q = E.cross_fold_scale(mu, sd, truth, fold, 0.9)
    lo, hi = E.interval(mu, sd, q)
    raw_lo, raw_hi = E.uncalibrated_interval(mu, sd)
    y = np.exp(truth)
    tol = 3 * np.sqrt(0.9 * 0.1 / n)
    assert abs(np.mean((y >= lo) & (y <= hi)) - 0.9) < tol
    assert np.mean((y >= raw_lo) & (y <= raw_hi)) < 0.6
    # no cell calibrated on its own fold: changing fold 0's truths leaves fold 0's q alone
    truth2 = truth.copy()
    truth2[fold == 0] += 10.0
    q2 = E.cross_fold_scale(mu, sd, truth2, fold, 0.9)
    assert np.array_equal(q2[fold == 0], q[fold == 0]) and not np.array_equal(q2, q)


def test_group_by_life_fixed_sizes():
    life = np.array([50.0, 10, 40, 20, 30, 60, 70])
    labels = G.group_by_life(life, 0, 3)  # runs of 3, the last keeps the rest
    assert labels.tolist() == [1, 0, 1, 0, 0, 1, 1]


def test_best_partition_agrees_with_brute_force():
    """Every split of the sorted cells into K runs of >= m cells, scored by sum(size x min)."""
    import itertools

    rng = np.random.default_rng(3)
    for _ in range(30):
        n, k, m = int(rng.integers(4, 10)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        if k * m > n:
            continue
        life = rng.integers(10, 500, n).astype(float)
        s = np.sort(life)
        best = max(
            sum((b - a) * s[a] for a, b in zip((0, *cuts), (*cuts, n), strict=True))
            for cuts in itertools.combinations(range(1, n), k - 1)
            if all(b - a >= m for a, b in zip((0, *cuts), (*cuts, n), strict=True)))
        labels = G.best_partition(life, k, m)
        assert G.available_lifetime(labels, life) * n == pytest.approx(best)
        assert len(G.group_sizes(labels)) == k and G.group_sizes(labels).min() >= m


def test_expected_partition_without_spread_is_the_point_partition():
    rng = np.random.default_rng(5)
    mu = np.log(rng.uniform(100, 900, 30))
    for offset in (0.0, 10.0):
        labels = G.expected_partition(mu, np.zeros(30), 5, 2, offset=offset)
        assert np.array_equal(labels, G.best_partition(offset + np.exp(mu), 5, 2))


def test_expected_partition_agrees_with_brute_force():
    """Every split of the mu-sorted cells into K runs of >= m cells, each worth size x the
    mean over the same draws of its minimum life."""
    import itertools

    rng = np.random.default_rng(11)
    for _ in range(15):
        n, k, m = int(rng.integers(4, 9)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        if k * m > n:
            continue
        mu, sd = np.log(rng.uniform(100, 600, n)), rng.uniform(0.0, 0.6, n)
        order = np.argsort(mu, kind="stable")
        draws = 7.0 + np.exp(mu[order] + sd[order] * np.random.default_rng(2).standard_normal((500, n)))

        def worth(cuts, n=n, draws=draws):
            return sum((b - a) * draws[:, a:b].min(1).mean()
                       for a, b in zip((0, *cuts), (*cuts, n), strict=True))

        best = max(worth(cuts) for cuts in itertools.combinations(range(1, n), k - 1)
                   if all(b - a >= m for a, b in zip((0, *cuts), (*cuts, n), strict=True)))
        labels = G.expected_partition(mu, sd, k, m, offset=7.0, samples=500, seed=2)
        runs = np.cumsum(np.bincount(labels[order]))[:-1]
        assert worth(tuple(runs)) == pytest.approx(best)
        assert len(G.group_sizes(labels)) == k and G.group_sizes(labels).min() >= m


def test_expected_partition_keeps_an_uncertain_cell_out_of_a_long_lived_group():
    """Two sure long-lived cells (1,000 cycles) and one predicted at 900 but very uncertain:
    the point rule puts the three together; the expected rule leaves the uncertain one with
    the short-lived cells, and its lifetime averaged over fresh draws is higher."""
    mu = np.log([100.0, 100, 100, 100, 900, 1000, 1000])
    sd = np.array([0.0, 0, 0, 0, 1.5, 0, 0])
    point = G.best_partition(np.exp(mu), 2, 2)
    expected = G.expected_partition(mu, sd, 2, 2, seed=0)
    assert point.tolist() == [0, 0, 0, 0, 1, 1, 1] and expected.tolist() == [0, 0, 0, 0, 0, 1, 1]
    fresh = np.exp(mu + sd * np.random.default_rng(99).standard_normal((4000, 7)))
    value = lambda labels: np.mean([G.available_lifetime(labels, life) for life in fresh])  # noqa: E731
    assert value(expected) > value(point) + 3  # cycles per cell (4.7 expected)


def test_fold_blocks_hold_out_runs_of_cell_numbers_whole():
    names = [f"LSD-{n}" for n in (*range(1, 61), *range(63, 89))]
    single = R.assign_folds(names, 5, 3)
    assert np.bincount(single).tolist() == [18, 17, 17, 17, 17]
    assert np.array_equal(single[np.random.default_rng(3).permutation(86)[:18]], np.zeros(18))
    blocks = R.assign_folds(names, 5, 3, block=4)
    numbers = np.array([int(n[4:]) for n in names])
    for b in np.unique((numbers - 1) // 4):
        assert len(set(blocks[(numbers - 1) // 4 == b])) == 1
    assert set(blocks) == set(range(5)) and np.bincount(blocks).min() >= 14
    with pytest.raises(ConfigError, match="train.fold_block = 4 needs numbered cells, got 'cell-a'"):
        R.assign_folds(["cell-a", "LSD-2"], 2, 0, block=4)
    for key in ("train.fold_block", "group.gp_components"):
        with pytest.raises(ConfigError, match=rf"{key} must be >= 1, got 0"):
            replace(LifeConfig(), {key: 0}).validate()


def test_gp_out_of_fold_learns_and_never_sees_the_held_out_cells():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + rng.normal(0, 0.05, 60)
    fold = np.arange(60) % 5
    mu, sd = E.gp_out_of_fold(x, y, fold, components=12, seed=0)
    assert np.corrcoef(mu, y)[0, 1] > 0.8 and (sd > 0).all()
    y2 = y.copy()
    y2[fold == 0] += 10.0  # the held-out fold's own targets cannot move its predictions
    mu2, sd2 = E.gp_out_of_fold(x, y2, fold, components=12, seed=0)
    np.testing.assert_array_equal(mu2[fold == 0], mu[fold == 0])
    assert not np.allclose(mu2[fold != 0], mu[fold != 0])


def test_calibrated_sd_gives_the_conformal_interval():
    rng = np.random.default_rng(1)
    mu, sd = rng.normal(size=200), rng.uniform(0.1, 0.3, 200)
    truth = mu + rng.normal(0, 0.6, 200)
    fold = np.arange(200) % 4
    q = E.cross_fold_scale(mu, sd, truth, fold, 0.8)
    z = E.calibrated_sd(mu, sd, truth, fold, 0.8)
    np.testing.assert_allclose(1.2815515655446004 * z, q * sd)


@pytest.mark.realdata
def test_best_partition_of_true_lives_is_the_published_ceiling(data_dir):
    """Data README: the best available lifetime for 8 groups of >= 2 cells is 420.0 cycles."""
    from slbjax.data.sorting import load_sorting

    lives = load_sorting(data_dir / "sorting").lives
    assert G.available_lifetime(G.best_partition(lives, 8, 2), lives) == pytest.approx(420.0, abs=0.05)


# ---------------------------------------------------------------- training core
def test_members_learn_their_own_rows():
    """Two members on disjoint halves of rows whose targets follow different laws: each
    learns its own law (row weights are per-member data in one program)."""
    rng = np.random.default_rng(1)
    n, f = 400, 3
    x = rng.normal(size=(n, f))
    half = np.arange(n) % 2
    log_life = np.where(half == 0, 5 + x[:, 0], 5 - x[:, 0])
    shares = np.tile(np.linspace(0.1, 1.0, 4), (n, 1))
    cell = np.arange(n)
    specs = [T.MemberSpec(np.flatnonzero(half == h)[:150], np.flatnonzero(half == h)[150:], 7)
             for h in (0, 1)]
    model = LifeMLP(hidden=(16,), levels=4)
    params, hp, results = T.fit_members(model, x, log_life, shares, cell, specs, epochs=150,
                                        patience=150, batch_size=32, learning_rate=1e-2,
                                        shape_weight=1.0, weight_decay=0.0, log=lambda s: None)
    pred, pred_shares = T.predict_members(model, params, hp, x)
    for h in (0, 1):
        rows = specs[h].val_cells
        own = np.sqrt(np.mean((pred[h, rows] - log_life[rows]) ** 2))
        other = np.sqrt(np.mean((pred[1 - h, rows] - log_life[rows]) ** 2))
        assert own < 0.25 < other
    assert np.all(np.diff(pred_shares, axis=-1) >= 0) and pred_shares[..., -1] == pytest.approx(1.0)


# ---------------------------------------------------------------- runner on real cells
SMALL = {"train.folds": 3, "train.ensemble_size": 2, "train.epochs": 20, "train.patience": 5,
         "train.forest_trees": 10, "data.start_stride": 40}


@pytest.fixture(scope="module")
def lsd_subset(data_dir, tmp_path_factory) -> Path:
    """A data folder with only 9 LSD files (no sorting folder)."""
    root = tmp_path_factory.mktemp("lsd9")
    (root / "imoe" / "LSD").mkdir(parents=True)
    for n in (1, 2, 3, 10, 11, 20, 30, 40, 50):
        shutil.copy(data_dir / "imoe" / "LSD" / f"{n}.csv", root / "imoe" / "LSD")
    return root


@pytest.fixture(scope="module")
def life_run(lsd_subset, tmp_path_factory) -> tuple[Path, dict]:
    """A small life-lsd run on the 9 files, as the CLI writes it."""
    run = tmp_path_factory.mktemp("life") / "run"
    sets = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    assert cli.main(["run", "life-lsd", "--data-dir", str(lsd_subset), "--workdir", str(run), *sets]) == 0
    return run, json.loads((run / "metrics.json").read_text())


@pytest.mark.realdata
def test_life_run_on_a_subset_of_lsd_files(life_run):
    run, metrics = life_run
    cells = pd.read_csv(run / "cells.csv")
    assert len(cells) == 9 and sorted(cells.fold.unique()) == [0, 1, 2]
    assert (cells.lower90_cycles <= cells.predicted_remaining_cycles).all()
    assert (cells.predicted_remaining_cycles <= cells.upper90_cycles).all()
    assert (cells.measured_cycle == 10).all()
    for m in ("slbjax", "ridge", "forest"):
        for k in ("mape_pct", "spearman", "picp90_uncalibrated", "interval_width90_uncalibrated_cycles"):
            assert np.isfinite(metrics[f"{m}_life_{k}"]), (m, k)
    assert metrics["num_cells"] == 9 and "group_slbjax_lifetime_cycles" not in metrics
    params, meta = checkpoint.load(run)
    assert meta["family"] == "life" and len(meta["hparams"]["z_mean"]) == 2
    assert meta["conformal_scale"] == metrics["conformal_scale_90"]
    # the saved members are the final ones (trained on every cell): 2 of them
    assert all(np.shape(a)[0] == 2 for a in jax.tree_util.tree_leaves(params))
    traj = pd.read_csv(run / "trajectories.csv")
    assert set(traj.cell) == set(cells.cell)
    # the SOH of the measured cycle, out of fold; the table and the metrics agree
    assert cells.soh.to_numpy() == pytest.approx(cells.capacity_ah.to_numpy() / 2.4)
    for m, col in (("slbjax", "estimated_soh"), ("ridge", "ridge_estimated_soh"),
                   ("forest", "forest_estimated_soh")):
        assert metrics[f"{m}_soh_arrival_mae_pct"] == pytest.approx(
            100 * np.abs(cells[col] - cells.soh).mean())
        assert np.isfinite(metrics[f"{m}_soh_mae_pct"]) and np.isfinite(metrics[f"{m}_soh_rmse_pct"])
    assert metrics["soh_mae_pct"] == metrics["slbjax_soh_mae_pct"]
    assert metrics["soh_num_samples"] == metrics["num_training_arrivals"]
    clusters = pd.read_csv(run / "clusters.csv")
    assert metrics["cluster_k"] == 4  # 8 groups asked, at most 9 cells / 2
    assert list(clusters.cell) == list(cells.cell)
    for name in ("soh_net", "life_net", "arrival_features", "soh_features", "true_life_group"):
        assert clusters[name].nunique() == 4, name
    assert metrics["cluster_soh_net_ari_true_life"] == pytest.approx(
        C.agreement(clusters.soh_net.to_numpy(), clusters.true_life_group.to_numpy()))
    assert set(params) == {"life", "soh"} and "soh_hparams" in meta


def _cut(src: Path, dst: Path, rows: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.csv")):
        lines = f.read_text().splitlines()
        (dst / f.name).write_text("\n".join(lines[:rows + 1]) + "\n")


@pytest.mark.realdata
def test_triage_on_files_cut_to_their_first_cycles(life_run, lsd_subset, tmp_path, capsys):
    run, _ = life_run
    _cut(lsd_subset / "imoe" / "LSD", tmp_path / "field", 10)
    out = tmp_path / "out"
    assert cli.main(["triage", "--run", str(run), "--input", str(tmp_path / "field"),
                     "--group-size", "3", "-o", str(out)]) == 0
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells.columns[:9]) == ["cell", "measured_cycle", "capacity_ah", "soh",
                                       "predicted_life_cycles", "life_lower90", "life_upper90",
                                       "group", "application"]
    assert len(cells) == 9 and cells.true_life_cycles.isna().all()  # no future in the files
    assert cells.soh.to_numpy() == pytest.approx(cells.capacity_ah.to_numpy() / 2.4)
    # the same prediction as the run's own final members from the full files' first cycles
    groups = pd.read_csv(out / "groups.csv")
    assert groups["size"].tolist() == [3, 3, 3]
    for g, part in cells.groupby("group"):
        row = groups.set_index("group").loc[g]
        assert row.predicted_life_cycles == pytest.approx(part.predicted_life_cycles.min())
        assert (part.application == row.application).all()
    order = cells.sort_values("predicted_life_cycles").group.to_numpy()
    assert (np.diff(order) >= 0).all()  # groups are runs of the predicted-life order
    report = (out / "report.md").read_text()
    assert "trajectories_by_group.png" in report and (out / "trajectories_by_group.png").exists()
    assert not (out / "life_parity.png").exists()
    # nothing is overwritten: a second triage into the same folder is refused
    before = (out / "cells.csv").read_bytes()
    assert cli.main(["triage", "--run", str(run), "--input", str(tmp_path / "field"), "-o", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err and (out / "cells.csv").read_bytes() == before
    # with full files the truth is known: parity figure and coverage
    out2 = tmp_path / "out2"
    assert cli.main(["triage", "--run", str(run), "--input", str(lsd_subset / "imoe" / "LSD"),
                     "--groups", "2", "-o", str(out2)]) == 0
    full = pd.read_csv(out2 / "cells.csv")
    assert full.true_life_cycles.notna().all() and (out2 / "life_parity.png").exists()
    # --groups K: the expected-lifetime partition under each cell's 90 % interval
    sd = np.log(full.life_upper90 / full.life_lower90).to_numpy() / (2 * 1.6448536269514722)
    expected = G.expected_partition(np.log(full.predicted_life_cycles.to_numpy()), sd, 2, 2)
    np.testing.assert_array_equal(full.group.to_numpy(), expected + 1)
    np.testing.assert_allclose(full.predicted_life_cycles, cells.predicted_life_cycles, rtol=1e-6)
    # the estimator reads the same last measured cycle from either file
    np.testing.assert_allclose(full.estimated_soh, cells.estimated_soh, rtol=1e-6)
    assert np.all(np.abs(cells.estimated_soh - cells.soh) < 0.1)


@pytest.mark.realdata
def test_triage_refuses_a_life_run_without_the_soh_estimator(life_run, lsd_subset, tmp_path, capsys):
    run, _ = life_run
    params, meta = checkpoint.load(run)
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(run / "config.json", old / "config.json")
    checkpoint.save(old, 1, params["life"], {k: v for k, v in meta.items() if not k.startswith("soh_")})
    with pytest.raises(RunDirError, match="holds no SOH estimator"):
        load_life_run(old)
    assert cli.main(["triage", "--run", str(old), "--input", str(lsd_subset / "imoe" / "LSD"),
                     "-o", str(tmp_path / "out")]) == 2
    assert "holds no SOH estimator" in capsys.readouterr().err


@pytest.mark.realdata
def test_triage_bad_inputs(life_run, lsd_subset, tmp_path, capsys):
    run, _ = life_run
    _cut(lsd_subset / "imoe" / "LSD", tmp_path / "short", 4)
    assert cli.main(["triage", "--run", str(run), "--input", str(tmp_path / "short"),
                     "-o", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: file ") and "1.csv, line 2 (cycle 1): holds 4 cycle(s) from its arrival on" in err
    bad = tmp_path / "apps.toml"
    bad.write_text("[[application]]\nname = 'x'\n")
    assert cli.main(["triage", "--run", str(run), "--input", str(lsd_subset / "imoe" / "LSD"),
                     "--apps", str(bad), "-o", str(tmp_path / "o2")]) == 2
    assert str(bad) in capsys.readouterr().err
    assert cli.main(["triage", "--run", str(tmp_path), "--input", str(lsd_subset),
                     "-o", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o1").exists() or not any((tmp_path / "o1").iterdir())


@pytest.mark.realdata
def test_life_run_refuses_a_file_too_short(lsd_subset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(lsd_subset, root)
    path = root / "imoe" / "LSD" / "1.csv"
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:6]) + "\n")  # header + 5 cycles
    with pytest.raises(DataError, match=r"1\.csv, line 2 \(cycle 1\): holds 5 cycle\(s\) from its arrival on; the life model needs 10"):
        R.train_and_evaluate(replace(LifeConfig(), SMALL), root, tmp_path / "run")


@pytest.mark.realdata
def test_life_lsd_smoke_with_grouping(data_dir, tmp_path):
    """The experiment's smoke config on all 86 cells, with the grouping table."""
    run = tmp_path / "run"
    assert cli.main(["run", "life-lsd", "--smoke", "--data-dir", str(data_dir), "--workdir", str(run),
                     "--set", "data.start_stride=50"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_cells"] == 86 and metrics["group_num_groups"] == 8
    table = pd.read_csv(run / "grouping.csv").set_index("method")
    assert {f"slbjax_{p}_{r}" for p in ("network", "sorting_gp") for r in ("point", "expected", "equal")
            } | {"second_refinement", "random", "oracle"} <= set(table.index)
    groups = pd.read_csv(run / "groups.csv")
    assert len(groups) == 86 and groups.group.value_counts().min() >= 2
    assert (groups.life_lower90 < groups.predicted_life_cycles).all()
    assert (groups.predicted_life_cycles < groups.life_upper90).all()
    # groups are runs of the predicted-life order, and the table scores exactly them
    by_group = groups.groupby("group").predicted_life_cycles
    assert (by_group.max().iloc[:-1].to_numpy() <= by_group.min().iloc[1:].to_numpy()).all()
    assert table.loc["slbjax_sorting_gp_expected", "lifetime_cycles"] == pytest.approx(
        G.available_lifetime(groups.group.to_numpy(), groups.true_life_cycles.to_numpy()))
    assert metrics["group_slbjax_lifetime_cycles"] == pytest.approx(
        table.loc["slbjax_sorting_gp_expected", "lifetime_cycles"])
    assert 0 < metrics["group_sorting_gp_life_picp90"] <= 1 and -1 <= metrics["group_network_life_spearman"] <= 1
