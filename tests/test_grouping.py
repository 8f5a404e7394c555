"""Consistency grouping (deep sorting): metrics, refinement, loaders, the published partitions, runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slbjax import cli
from slbjax.data import sorting
from slbjax.decide import grouping as G
from slbjax.errors import DataError

# ---------------------------------------------------------------- metrics, by hand
# Three cells: a lives 2 cycles, b 3, c 1.
A, B, C = np.array([2.0, 1.5]), np.array([1.8, 1.6, 1.3]), np.array([1.9])
# Two more for pooling: d and e live 2 cycles each.
D, E = np.array([1.5, 1.5]), np.array([1.5, 1.2])


def test_available_lifetime_by_hand():
    # groups {0: lives 3, 5} {1: life 4}: (2 * 3 + 1 * 4) / 3 cells = 10 / 3
    assert G.available_lifetime(np.array([0, 0, 1]), np.array([3, 5, 4])) == pytest.approx(10 / 3)
    # one group: every cell retires with the shortest (3)
    assert G.available_lifetime(np.array([7, 7, 7]), np.array([3, 5, 4])) == pytest.approx(3.0)
    # singletons: the mean life (12 / 3)
    assert G.available_lifetime(np.array([0, 1, 2]), np.array([3, 5, 4])) == pytest.approx(4.0)


def test_aging_difference_by_hand():
    # a vs b: a padded to [2.0, 1.5, 1.2]: |0.2| + |0.1| + |0.1| = 0.4
    # a vs c: c padded to [1.9, 1.2]:      |0.1| + |0.3|         = 0.4
    # b vs c: c padded to [1.9, 1.2, 1.2]: |0.1| + |0.4| + |0.1| = 0.6
    trajs = [A, B, C]
    assert G.aging_difference(np.array([0, 0, 0]), trajs) == pytest.approx(1.4 / 3)
    assert G.aging_difference(np.array([0, 0, 1]), trajs) == pytest.approx(0.4)  # only a-b
    assert np.isnan(G.aging_difference(np.array([0, 1, 2]), trajs))  # no pair at all
    # pad value: with pad 0, a vs c = |0.1| + |1.5| = 1.6
    assert G.aging_difference(np.array([0, 1, 0]), trajs, pad_ah=0.0) == pytest.approx(1.6)
    # pooled over groups: {a, b, c} has 3 pairs (1.4 in all), {d, e} 1 pair (|0| + |0.3|):
    # (0.4 + 0.4 + 0.6 + 0.3) / 4 pairs = 0.425 (the mean of the group means would be 0.3833)
    groups = np.array([0, 0, 0, 1, 1])
    assert G.aging_difference(groups, [A, B, C, D, E]) == pytest.approx(0.425)
    dist = G.aging_distances([A, B, C, D, E])
    assert dist[0, 1] == pytest.approx(0.4) and dist[1, 2] == pytest.approx(0.6)
    assert G.aging_difference_from_distances(groups, dist) == pytest.approx(0.425)


def test_capacity_utilisation_by_hand():
    # totals: a 3.5, b 4.7, c 1.9 -> 10.1 Ah
    # {a, b} retire at cycle 2: a 3.5 + b (1.8 + 1.6) 3.4; {c} alone 1.9 -> 8.8 / 10.1
    trajs = [A, B, C]
    assert G.capacity_utilisation(np.array([0, 0, 1]), trajs) == pytest.approx(8.8 / 10.1)
    # one group retires at cycle 1: 2.0 + 1.8 + 1.9 = 5.7 / 10.1
    assert G.capacity_utilisation(np.array([0, 0, 0]), trajs) == pytest.approx(5.7 / 10.1)
    assert G.capacity_utilisation(np.array([0, 1, 2]), trajs) == pytest.approx(1.0)


def test_share_of_oracle_gain_both_directions():
    # lifetime (higher is better): (300 - 240) / (380 - 240) = 60 / 140
    assert G.share_of_oracle_gain(300.0, 240.0, 380.0) == pytest.approx(60 / 140)
    # aging difference (lower is better): (50 - 95) / (41 - 95) = 45 / 54
    assert G.share_of_oracle_gain(50.0, 95.0, 41.0) == pytest.approx(45 / 54)
    assert G.share_of_oracle_gain(95.0, 95.0, 41.0) == 0.0
    assert np.isnan(G.share_of_oracle_gain(1.0, 2.0, 2.0))


def test_oracle_and_random_groups():
    # lives 5 1 4 2 3 -> order by life: cells 1, 3, 4 | 2, 0 (first group holds the extra cell)
    assert G.oracle_groups(np.array([5, 1, 4, 2, 3]), 2).tolist() == [1, 0, 1, 0, 0]
    # equal lives keep their position order
    assert G.oracle_groups(np.array([2, 2, 2, 1]), 2).tolist() == [0, 1, 1, 0]
    r = G.random_groups([2, 3], seed=4)
    assert sorted(G.group_sizes(r).tolist()) == [2, 3]
    assert np.array_equal(r, G.random_groups([2, 3], seed=4))


# ---------------------------------------------------------------- refinement
def test_refine_moves_to_strictly_nearer_centroid():
    # 1-D: groups {0, 1, 10} (centroid 11/3) and {11} (11).  Cell at 10 is 6.33 from its own
    # centroid and 1 from the other: it moves.  Pass 2: centroids 0.5 and 10.5, nothing moves.
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels, passes = G.refine(np.array([0, 0, 0, 1]), x, return_passes=True)
    assert labels.tolist() == [0, 0, 1, 1] and passes == 2
    # the label values are kept
    assert G.refine(np.array([5, 5, 5, 9]), x).tolist() == [5, 5, 9, 9]
    # max_passes bounds the passes
    assert G.refine(np.array([0, 0, 0, 1]), x, max_passes=1, return_passes=True)[1] == 1


def test_refine_tie_stays():
    # {0, 3} centroid 1.5, {4.5, 4.5} centroid 4.5: cell at 3 is 1.5 from both -> stays (margin 0)
    x = np.array([[0.0], [3.0], [4.5], [4.5]])
    labels, passes = G.refine(np.array([0, 0, 1, 1]), x, return_passes=True)
    assert labels.tolist() == [0, 0, 1, 1] and passes == 1


def test_refine_emptied_group_stays_empty():
    # group 0 = {0, 10} (centroid 5), group 1 = {-1, -1}, group 2 = {11, 11}: cell 0 joins group
    # 1 (1 < 5) and cell 10 joins group 2 (1 < 5), so group 0 empties and stays empty.
    x = np.array([[0.0], [10.0], [-1.0], [-1.0], [11.0], [11.0]])
    labels, passes = G.refine(np.array([0, 0, 1, 1, 2, 2]), x, return_passes=True)
    assert labels.tolist() == [1, 2, 1, 1, 2, 2] and passes == 2
    assert G.available_lifetime(labels, np.arange(1, 7)) == pytest.approx((3 * 1 + 3 * 2) / 6)


def test_standardize_population_std():
    z = G.standardize(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert z[:, 0].tolist() == [-1.0, 1.0]  # population std 1
    assert z[:, 1].tolist() == [0.0, 0.0]  # constant column


# ---------------------------------------------------------------- real data
PUBLISHED_INITIAL = [
    [13, 14, 15, 16, 25, 27, 28, 33, 34, 36, 43, 44, 68, 70, 71, 72],
    [1, 2, 3, 4, 37, 45, 46, 49, 50, 52, 82],
    [6, 7, 8, 9, 10, 11, 12, 35, 39, 40, 47, 48, 53, 54, 56, 63, 64],
    [17, 18, 19, 20, 57, 58, 59, 75],
    [5, 26, 41, 42, 55, 60, 65, 66, 67, 77],
    [69, 79, 80],
    [29, 30, 31, 32, 38, 76, 78, 83, 84, 85, 86, 88],
    [21, 22, 23, 24, 51, 73, 74, 81, 87],
]
PUBLISHED_FIRST = [
    [13, 14, 15, 16, 25, 27, 28, 33, 34, 36, 41, 43, 44, 65, 66, 67, 68, 71, 72],
    [1, 2, 3, 4, 37, 45, 46, 49, 50, 51, 52],
    [5, 6, 7, 8, 9, 10, 11, 12, 39, 40, 47, 48, 53, 54, 55, 56, 63, 64],
    [17, 18, 19, 20, 57, 58, 59, 75, 82],
    [26, 35, 42, 60],
    [69, 70, 79, 80],
    [29, 30, 31, 32, 38, 73, 74, 76, 77, 78, 81, 83, 84, 85, 86, 87, 88],
    [21, 22, 23, 24],
]
PUBLISHED_SECOND = [
    [13, 14, 15, 16, 25, 27, 28, 33, 34, 36, 44, 65, 66, 67, 68, 71, 72],
    [1, 2, 3, 4, 37, 38, 46, 49, 50, 51, 52],
    [5, 6, 7, 8, 9, 10, 11, 12, 39, 40, 47, 48, 53, 54, 56, 63, 64],
    [17, 18, 19, 20, 45, 57, 58, 59, 75, 82],
    [26, 31, 35, 41, 42, 43, 55],
    [69, 70, 77, 79, 80],
    [29, 30, 32, 60, 73, 74, 76, 78, 81, 83, 84, 85, 86, 87, 88],
    [21, 22, 23, 24],
]
# (aging difference, lifetime, capa_util from the trajectories file), data README section 4
PUBLISHED_METRICS = [(61.720583, 285.186047, 0.6631), (45.274383, 320.709302, 0.7374),
                     (44.617586, 333.732558, 0.7656)]


@pytest.fixture(scope="module")
def sorting_dir(data_dir) -> Path:
    """``$SLBJAX_DATA/sorting``; fails (does not skip) when its files are missing."""
    folder = data_dir / "sorting"
    for name in (sorting.FEATURES_FILE, sorting.TRAJECTORIES_FILE):
        if not (folder / name).is_file():
            pytest.fail(f"SLBJAX_DATA={str(data_dir)!r} has no sorting/{name}")
    return folder


@pytest.fixture(scope="module")
def real(sorting_dir) -> sorting.SortingData:
    return sorting.load_sorting(sorting_dir)


def _labels(cells: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    where = {c: g for g, members in enumerate(groups) for c in members}
    return np.array([where[c] for c in cells.tolist()])


def _as_sets(cells: np.ndarray, labels: np.ndarray) -> set[frozenset]:
    return {frozenset(cells[labels == g].tolist()) for g in np.unique(labels)}


@pytest.mark.realdata
def test_real_files_load(real):
    assert real.cells.tolist() == [*range(1, 61), *range(63, 89)]
    assert all(real.curves[j].shape == (86, 36) for j in (1, 2, 3))
    assert list(real.curves[2].columns[:2]) == ["feature_1_2_1", "feature_1_2_2"]
    assert real.explicit.shape == (86, 7)
    assert int(real.lives.sum()) == 39456 and real.lives.min() == 196 and real.lives.max() == 1916
    assert real.lives[real.cells.tolist().index(22)] == 1916
    # capacity of the feature cycle = first trajectory value (Ah)
    assert np.array_equal(real.explicit["capacity"].to_numpy(), [t[0] for t in real.trajectories])
    assert np.ptp(real.explicit["ica_2"].to_numpy()) < 1e-12


@pytest.mark.realdata
def test_published_partitions_and_metrics(real):
    z2 = G.standardize(real.curves[2].to_numpy())
    z3 = G.standardize(real.curves[3].to_numpy())
    initial = _labels(real.cells, PUBLISHED_INITIAL)
    first, passes1 = G.refine(initial, z2, max_passes=10, return_passes=True)
    second, passes2 = G.refine(first, z3, max_passes=10, return_passes=True)
    assert _as_sets(real.cells, first) == _as_sets(real.cells, _labels(real.cells, PUBLISHED_FIRST))
    assert _as_sets(real.cells, second) == _as_sets(real.cells, _labels(real.cells, PUBLISHED_SECOND))
    assert (passes1, passes2) == (5, 3)  # the passes without moves the authors' code reports
    for labels, (diff, life, util) in zip((initial, first, second), PUBLISHED_METRICS, strict=True):
        # published values are given to 6 decimals: agree to half a unit of the last one
        assert G.aging_difference(labels, real.trajectories, 1.2) == pytest.approx(diff, abs=5e-7)
        assert G.available_lifetime(labels, real.lives) == pytest.approx(life, abs=5e-7)
        assert G.capacity_utilisation(labels, real.trajectories) == pytest.approx(util, abs=5e-5)


@pytest.mark.realdata
def test_real_reference_baselines(real):
    dist = G.aging_distances(real.trajectories)
    oracle = G.oracle_groups(real.lives, 8)
    assert sorted(G.group_sizes(oracle).tolist()) == [10, 10, 11, 11, 11, 11, 11, 11]
    assert G.available_lifetime(oracle, real.lives) == pytest.approx(382.2, abs=0.05)
    # capacity-only k-means, seed 78825: 102.70 / 238.1 (data README, both library versions)
    cap = G.kmeans_groups(real.explicit[["capacity"]].to_numpy(), 8, 78825, 10)
    assert G.aging_difference_from_distances(cap, dist) == pytest.approx(102.70, abs=0.005)
    assert G.available_lifetime(cap, real.lives) == pytest.approx(238.1, abs=0.05)


# ---------------------------------------------------------------- loader errors
@pytest.fixture
def small_copy(sorting_dir, tmp_path) -> Path:
    """``tmp/sorting/``: the two real files cut to cells 1-4 (features lines 2-5)."""
    out = tmp_path / "data" / "sorting"
    out.mkdir(parents=True)
    feat = (sorting_dir / sorting.FEATURES_FILE).read_text().splitlines(keepends=True)
    (out / sorting.FEATURES_FILE).write_text("".join(feat[:5]))
    traj = (sorting_dir / sorting.TRAJECTORIES_FILE).read_text().splitlines(keepends=True)
    keep = [traj[0]] + [ln for ln in traj[1:] if ln.split(",")[1] in {"1", "2", "3", "4"}]
    (out / sorting.TRAJECTORIES_FILE).write_text("".join(keep))
    return out


def _edit(path: Path, line: int, column: str, value: str) -> None:
    """Sets ``column`` on file line ``line`` (header = 1) to ``value``."""
    lines = path.read_text().splitlines()
    col = lines[0].split(",").index(column)
    fields = lines[line - 1].split(",")
    fields[col] = value
    lines[line - 1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def _error(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        sorting.load_sorting(folder)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.realdata
def test_small_copy_loads(small_copy):
    data = sorting.load_sorting(small_copy)
    assert data.cells.tolist() == [1, 2, 3, 4]


@pytest.mark.realdata
@pytest.mark.parametrize("name, line, column, value, expected", [
    (sorting.FEATURES_FILE, 3, "voltage", "abc", "expected a number, got 'abc'"),
    (sorting.FEATURES_FILE, 4, "feature_2_3_7", "inf", "expected a finite number, got 'inf'"),
    (sorting.FEATURES_FILE, 5, "bat_num", "2.5", "expected an integer"),
    (sorting.FEATURES_FILE, 5, "bat_num", "2", "cell 2 already on line 3"),
    (sorting.TRAJECTORIES_FILE, 10, "capacity", "nan", "expected a finite number, got 'nan'"),
    (sorting.TRAJECTORIES_FILE, 7, "capacity", "", "expected a number, got ''"),
    (sorting.TRAJECTORIES_FILE, 12, "cycle", "3.0", "expected cycles increasing within a cell"),
])
def test_bad_value_names_file_line_field(small_copy, name, line, column, value, expected):
    _edit(small_copy / name, line, column, value)
    msg = _error(small_copy)
    assert f"file {small_copy / name}" in msg
    assert f"line {line}, field {column!r}: " in msg and expected in msg


@pytest.mark.realdata
@pytest.mark.parametrize("name", [sorting.FEATURES_FILE, sorting.TRAJECTORIES_FILE])
def test_missing_column_and_file(small_copy, name):
    path = small_copy / name
    text = path.read_text()
    path.write_text(text.replace(",capacity", ",capacity_ah", 1))
    msg = _error(small_copy)
    assert f"file {path}" in msg and "line 1, field 'capacity':" in msg
    path.unlink()
    msg = _error(small_copy)
    assert f"file {path}" in msg and "file not found" in msg
    path.write_text("")
    assert "file is empty" in _error(small_copy)


@pytest.mark.realdata
def test_cell_in_one_file_only(small_copy):
    traj = small_copy / sorting.TRAJECTORIES_FILE
    lines = traj.read_text().splitlines(keepends=True)
    # cell 4 only in features.csv (its row is line 5)
    traj.write_text("".join(ln for ln in lines if ln.split(",")[1] != "4"))
    msg = _error(small_copy)
    assert f"file {small_copy / sorting.FEATURES_FILE}" in msg
    assert "line 5, field 'bat_num': cell 4 has no row" in msg
    # cell 99 only in the trajectories (its first row is the file's last line)
    extra = ["0,99,1.0,1.89\n", "1,99,2.0,1.88\n"]
    traj.write_text("".join(lines + extra))
    msg = _error(small_copy)
    assert f"file {traj}, line {len(lines) + 1}, field 'bat_num': cell 99 has no row" in msg


@pytest.mark.realdata
def test_cli_prints_one_error_line(small_copy, tmp_path, capsys):
    _edit(small_copy / sorting.FEATURES_FILE, 2, "ica_1", "x")
    rc = cli.main(["run", "sort-deep", "--smoke", "--data-dir", str(small_copy.parent),
                   "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: file ") and "line 2, field 'ica_1':" in err[-1]


# ---------------------------------------------------------------- runner
@pytest.mark.realdata
def test_runner_end_to_end(data_dir, sorting_dir, tmp_path):
    run_dir = tmp_path / "run"
    rc = cli.main(["run", "sort-deep", "--smoke", "--data-dir", str(data_dir),
                   "--workdir", str(run_dir)])
    assert rc == 0
    groups = pd.read_csv(run_dir / "groups.csv")
    assert list(groups.columns) == ["cell", "group"] and len(groups) == 86
    assert groups["group"].between(1, 8).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for step in G.STEPS:
        for m in ("lifetime_cycles", "aging_difference", "capacity_utilisation"):
            for suffix in ("", "_median", "_p05", "_p95"):
                assert np.isfinite(metrics[f"{step}_{m}{suffix}"])
            assert f"{step}_{m}_share_of_oracle_gain" in metrics
    for key in ("explicit_kmeans_lifetime_cycles", "capacity_kmeans_aging_difference_median",
                "random_lifetime_cycles_median", "oracle_lifetime_cycles",
                "explicit_kmeans_aging_difference_share_of_oracle_gain"):
        assert key in metrics
    assert metrics["num_seeds"] == 5
    # groups.csv is the second refinement the metrics score
    data = sorting.load_sorting(sorting_dir)
    labels = groups.set_index("cell").loc[data.cells, "group"].to_numpy()
    assert G.available_lifetime(labels, data.lives) == pytest.approx(
        metrics["second_refinement_lifetime_cycles"])
    table = pd.read_csv(run_dir / "methods.csv")
    assert table["method"].tolist() == [*G.STEPS, "explicit_kmeans", "capacity_kmeans",
                                        "random", "oracle"]
    assert json.loads((run_dir / "config.json").read_text())["experiment"] == "sort-deep"
