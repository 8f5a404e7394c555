"""Sweeps: grid expansion, batching of shape-free values, reuse of finished points."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from slbjax.experiments import imoe_experts, imoe_synthetic

from slbjax.cli import main
from slbjax.errors import ConfigError
from slbjax.runners import imoe
from slbjax.sweep import (
    axis_label,
    expand,
    experiment_grid,
    groups_of,
    merge_grids,
    parse_grid,
    plot_sweep,
    point_name,
)


def test_parse_and_expand_the_cartesian_grid():
    grid = parse_grid(["model.num_experts=3,4", "train.seed=0,1,2"])
    points = expand(imoe_synthetic.get_config(smoke=True), grid)
    assert len(points) == 6
    assert {(c.model.num_experts, c.train.seed) for _, c in points} == {(e, s) for e in (3, 4) for s in (0, 1, 2)}
    assert point_name(points[0][0]) == "num_experts=3_seed=0"


@pytest.mark.parametrize("bad", ["model.num_experts", "model.num_experts=", "=1,2"])
def test_bad_grid_items_are_rejected(bad):
    with pytest.raises(ConfigError):
        parse_grid([bad])


def test_bad_grid_values_are_checked_like_overrides():
    with pytest.raises(ConfigError, match="bad value for model.num_experts"):
        expand(imoe_synthetic.get_config(smoke=True), parse_grid(["model.num_experts=3,x"]))


def test_shape_free_values_share_a_program_and_shapes_do_not():
    grid = parse_grid(["model.num_experts=3,4", "train.seed=0,1", "train.learning_rate=1e-3,1e-2"])
    cfgs = [c for _, c in expand(imoe_synthetic.get_config(smoke=True), grid)]
    groups = groups_of(imoe, cfgs)
    assert len(groups) == 2  # one program per expert count
    for g in groups:
        assert len(g) == 4 and len({cfgs[i].model.num_experts for i in g}) == 1


def test_sweep_runs_gathers_and_reuses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLBJAX_FIGURES", "1")
    wd = tmp_path / "sw"
    args = ["sweep", "imoe-synthetic", "--smoke", "--grid", "train.seed=0,1",
            "--grid", "model.num_experts=2,3", "--set", "train.epochs=2", "--workdir", str(wd)]
    assert main(args) == 0
    table = pd.read_csv(wd / "sweep.csv")
    assert len(table) == 4 and table.test_mape_pct.notna().all()
    assert (wd / "sweep.png").exists()
    # every point is a run with its figures, listed in its marker
    for point in (wd / "points").iterdir():
        files = json.loads((point / "slbjax-run.json").read_text())["files"]
        assert {"trajectories.png", "parity.png", "per_cell_mape.png"} <= set(files)
        assert (point / "parity.png").read_bytes()[:4] == b"\x89PNG"
    # the two seeds of one expert count trained in one program yet differ
    e2 = table[table["model.num_experts"] == 2]
    assert e2.test_mape_pct.nunique() == 2
    # each point is an ordinary run folder
    cfg = json.loads((wd / "points" / "seed=1_num_experts=3" / "config.json").read_text())
    assert cfg["config"]["train"]["seed"] == 1 and cfg["config"]["model"]["num_experts"] == 3
    # a second invocation reuses every finished point
    capsys.readouterr()
    assert main(args) == 0
    assert "4 reused" in capsys.readouterr().err
    again = pd.read_csv(wd / "sweep.csv")
    pd.testing.assert_frame_equal(table, again)


def test_batched_seeds_equal_separate_runs(tmp_path):
    base = imoe_synthetic.get_config(smoke=True)
    cfgs = [c for _, c in expand(base, parse_grid(["train.seed=0,1"]))]
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    together = imoe.train_and_evaluate_group(cfgs, None, dirs)
    (tmp_path / "c").mkdir()
    alone = imoe.train_and_evaluate(cfgs[1], None, tmp_path / "c")
    assert together[1]["test_mape_pct"] == pytest.approx(alone["test_mape_pct"], rel=1e-4)


def test_declared_grid_is_merged_with_command_line_grids():
    declared = experiment_grid(imoe_experts, smoke=False)
    assert declared == [("model.num_experts", ["3", "4", "5", "6", "7", "8"])]
    merged = merge_grids(declared, parse_grid(["train.seed=0,1"]))
    assert merged == [("model.num_experts", ["3", "4", "5", "6", "7", "8"]), ("train.seed", ["0", "1"])]
    # a command-line grid of the same key replaces the declared values
    assert merge_grids(declared, parse_grid(["model.num_experts=4"])) == [("model.num_experts", ["4"])]
    assert experiment_grid(imoe_synthetic, smoke=True) == []
    with pytest.raises(ConfigError, match="nothing to sweep"):
        merge_grids([], [])


def test_sweep_figure_has_integer_ticks_plain_numbers_and_says_when_seeds_explain_it(tmp_path):
    # expert counts 2, 4, 8 whose MAPE differs by 0.0002 % while seeds differ by more
    table = pd.DataFrame({"model.num_experts": ["2", "2", "4", "4", "8", "8"], "train.seed": ["0", "1"] * 3,
                          "test_mape_pct": [2.3610, 2.3614, 2.3612, 2.3609, 2.3611, 2.3615]})
    fig = plot_sweep(table, ["model.num_experts", "train.seed"], tmp_path / "sweep.png")
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [2, 4, 8]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    assert not any(c in t.get_text() for t in ax.get_yticklabels() for c in "e+")
    assert ax.get_xlabel() == "number of experts" and ax.get_ylabel() == "test MAPE (%)"
    assert "differences within the seed spread" in ax.get_title() and "2 seeds" in ax.get_title()
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.05 * 2.3  # a 0.0002 % difference is not stretched over the whole axis
    (bars,) = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert bars.has_yerr  # std over seeds


def test_sweep_figure_of_strings_is_categorical_with_one_line_per_other_key(tmp_path):
    table = pd.DataFrame({"model.gate": ["authors", "topk_softmax"] * 2, "data.horizon": [10, 10, 30, 30],
                          "test_mape_pct": [3.0, 2.0, 4.0, 2.5]})
    ax = plot_sweep(table, ["model.gate", "data.horizon"], tmp_path / "sweep.png").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["authors", "topk_softmax"]
    assert list(ax.get_xticks()) == [0, 1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["prediction horizon (cycles) 10", "prediction horizon (cycles) 30"]
    assert "no seed spread" in ax.get_title()
    assert axis_label("train.some_key") == "some key" and axis_label("val_rmse_pct") == "val rmse (%)"
