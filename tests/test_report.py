"""``slbjax report``: suites, the smoke report's tables and figures, reuse of finished runs."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pandas as pd
import pytest

from slbjax import paper_reference, report, suites
from slbjax.errors import ConfigError, DataError


def test_imoe_suite_covers_every_table_with_ten_seeds():
    points = suites.imoe_points(smoke=False, seeds=10)
    by_table = collections.Counter(p.table for p in points)
    # Fig. 3c: 5 UL-NCA conditions + LSD, 3 models; Fig. 5a: the two ablations
    assert by_table["fig3c"] == 6 * 3 * 10
    assert by_table["fig5a"] == 6 * 2 * 10
    assert by_table["fig5c"] == 6 * 10 and by_table["fig5b"] == 5 * 10
    assert by_table["fig5d"] == 6 * 10 and by_table["fig3f"] == 4 * 10
    lsd = [p for p in points if p.group == "LSD" and p.model == "informer" and p.seed == 3]
    assert len(lsd) == 1
    cfg = lsd[0].cfg
    assert (cfg.data.dataset, cfg.data.skip_first, cfg.model.arch, cfg.train.seed) == ("LSD", 1, "informer", 3)
    short = [p for p in points if p.group == "UL-NCA CY25-1_1"]
    assert {p.cfg.data.horizon for p in short} == {10}
    wofo = [p for p in points if p.model == "imoe-wofo"]
    assert all(not p.cfg.model.use_load for p in wofo)
    # points of different tables with one config share a run: Fig. 5c's 5 experts is Fig. 3c's iMOE
    keys = {report.config_key(p.cfg) for p in points}
    assert len(keys) < len(points)
    fig5c5 = next(p for p in points if p.table == "fig5c" and p.x == "5" and p.seed == 0)
    fig3c = next(p for p in points if p.table == "fig3c" and p.model == "imoe"
                 and p.group == "UL-NCA CY25-05_1" and p.seed == 0)
    assert report.config_key(fig5c5.cfg) == report.config_key(fig3c.cfg)


def test_suites_need_data_and_a_known_name(tmp_path):
    with pytest.raises(DataError, match="SLBJAX_DATA"):
        suites.suite_points("imoe-paper", True, None)
    with pytest.raises(ConfigError, match="unknown suite"):
        suites.suite_points("nope", True, tmp_path)
    with pytest.raises(ConfigError, match="pulse workbooks"):
        suites.suite_points("cvae-paper", True, tmp_path)


def test_paper_values_are_looked_up_per_table():
    assert report.paper_value("fig3c", "UL-NCA CY25-05_1", "imoe", "", "")[0] == pytest.approx(0.88, abs=0.01)
    assert report.paper_value("fig5b", "UL-NCA CY25-05_1", "imoe", "data.train_fraction", "0.2") == \
        paper_reference.lookup(paper_reference.FIG5B, "UL-NCA CY25-05_1", 20)
    assert report.paper_value("fig5c", "UL-NCA CY25-05_1", "imoe", "model.num_experts", "5") == \
        paper_reference.lookup(paper_reference.FIG5C, "UL-NCA CY25-05_1", 5)
    assert report.paper_value("fig3c", "UL-NCA CY99-9_9", "imoe", "", "") is None


def _report_cli(args: list[str]) -> str:
    """Runs ``slbjax ARGS`` as a user would, in its own process with one CPU device.

    The report trains ~20 single-device programs; in this test process each
    would run beside 8 fake devices (conftest), which costs about 40 % of the
    test's time and exercises nothing the data-parallel tests do not.  The
    strict promotion rules of the conftest are passed on.
    """
    env = {**os.environ, "JAX_NUMPY_DTYPE_PROMOTION": "strict", "JAX_NUMPY_RANK_PROMOTION": "raise",
           "JAX_NUM_CPU_DEVICES": "1"}
    proc = subprocess.run([sys.executable, "-m", "slbjax.cli", *args], env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


@pytest.mark.realdata
@pytest.mark.long
def test_smoke_report_writes_every_table_and_figure_and_reuses_runs(data_dir, tmp_path):
    wd = tmp_path / "rep"
    args = ["report", "all", "--smoke", "--data-dir", str(data_dir), "--workdir", str(wd)]
    err = _report_cli(args)
    assert "0 reused" in err
    text = (wd / "report.md").read_text()
    for heading in ("Fig. 3c", "Fig. 5a", "Fig. 5b", "Fig. 5c", "Fig. 5d", "Fig. 3f", "Fig. 5e",
                    "CVAE", "NMC2.1", "NMC21", "LFP", "cannot support"):
        assert heading in text, heading
    figures = {p.name for p in (wd / "figures").iterdir()}
    assert figures == {"fig3c_fig5a_mape.png", "parity_imoe.png", "trajectories_imoe.png", "sweeps.png",
                       "lsd_by_soh.png", "cvae_cases.png", "cvae_generation_heatmap.png"}
    for name in figures:
        assert f"figures/{name}" in text
    results = pd.read_csv(wd / "results.csv")
    # the suite's runs, plus Fig. 5a's history baselines on the smoke UL-NCA condition:
    # the polynomial (deterministic, one row) and the MLP (two seeds)
    history = results[results.experiment == "history"]
    assert len(results) == len(suites.suite_points("all", True, data_dir)) + len(history)
    assert sorted(history.model) == ["mlp", "mlp", "polynomial"]
    assert set(history.group) == {f"UL-NCA {suites.SWEEP_CONDITION}"}
    assert results.test_mape_pct[results.model != "cvae"].notna().all()
    summary = pd.read_csv(wd / "summary.csv")
    row = summary[(summary.table == "fig3c") & (summary.group == "UL-NCA CY25-05_1") & (summary.model == "imoe")]
    assert row.n.item() == 2 and row.paper_n.item() == 10
    # every run folder is an ordinary, reloadable run
    assert all((wd / r / "metrics.json").exists() for r in results.run)

    # the second invocation trains nothing and writes the same numbers
    before = {r: (wd / r / "metrics.json").stat().st_mtime_ns for r in results.run.unique()}
    err = _report_cli(args)
    runs = results[results.experiment != "history"]
    assert f"{runs.run.nunique()} reused" in err and "0 program(s) to train" in err
    assert "history: 2 baseline result(s), 2 reused, 0 computed" in err
    assert {r: (wd / r / "metrics.json").stat().st_mtime_ns for r in before} == before
    pd.testing.assert_frame_equal(pd.read_csv(wd / "results.csv"), results)


def test_suite_ablation_switches_are_the_named_experiments():
    from slbjax import experiments

    points = suites.imoe_points(smoke=False, seeds=1)
    for model, experiment in (("imoe-linear", "imoe-linear"), ("imoe-wofo", "imoe-wofo")):
        ul = next(p for p in points if p.model == model and p.group == "UL-NCA CY25-05_1")
        assert report.config_key(ul.cfg) == report.config_key(experiments.load(experiment).get_config())
