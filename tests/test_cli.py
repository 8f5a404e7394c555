"""The ``slbjax`` command end to end on the built-in synthetic cohort."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from slbjax.cli import main
from slbjax.data.synthetic import cohort_split, generate_cohort
from slbjax.inference import TRAJECTORY_COLUMNS, load_run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One finished smoke run of imoe-synthetic, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("runs") / "syn"
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(run_dir)]) == 0
    return run_dir


def test_list_names_every_experiment_first(capsys):
    assert main(["list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    for name in ("imoe-synthetic", "imoe-ul", "imoe-lsd", "imoe-tpsl"):
        assert name in names


def test_run_writes_config_metrics_tables_and_checkpoint(smoke_run):
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert cfg["experiment"] == "imoe-synthetic"
    assert cfg["config"]["data"]["dataset"] == "synthetic"
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in ("test_mape_pct", "test_rmse_ah", "test_r2", "val_mape_pct", "train_seconds"):
        assert isinstance(metrics[key], float), key
    assert 0 < metrics["test_mape_pct"] < 50
    preds = pd.read_csv(smoke_run / "predictions.csv")
    assert list(preds.columns) == TRAJECTORY_COLUMNS  # predict adds split, source, in_distribution
    assert (smoke_run / "per_cell_metrics.csv").exists()
    assert (smoke_run / "checkpoints").is_dir()


def test_existing_run_folder_is_not_overwritten(smoke_run, capsys):
    before = (smoke_run / "metrics.json").read_text()
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(smoke_run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (smoke_run / "metrics.json").read_text() == before


def test_overwrite_replaces_a_run(tmp_path):
    run_dir = tmp_path / "r"
    args = ["run", "imoe-synthetic", "--smoke", "--workdir", str(run_dir),
            "--set", "train.epochs=1", "--set", "data.synthetic_cells=10"]
    assert main(args) == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    assert main(args + ["--overwrite", "--set", "train.seed=1"]) == 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["train"]["seed"] == 1
    assert json.loads((run_dir / "metrics.json").read_text()) != first


def test_same_config_and_seed_give_the_same_numbers(smoke_run, tmp_path):
    again = tmp_path / "again"
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(again)]) == 0
    a = json.loads((smoke_run / "metrics.json").read_text())
    b = json.loads((again / "metrics.json").read_text())
    for k in a:
        if "seconds" not in k:
            assert a[k] == b[k], k


def test_load_run_predicts_exactly_what_the_run_evaluated(smoke_run):
    run = load_run(smoke_run)
    assert run.config.data.dataset == "synthetic"
    d = run.config.data
    cells = generate_cohort(d.synthetic_cells, d.synthetic_seed, min_cycles=d.horizon + 20)
    _, _, test = cohort_split(cells)
    table = run.predict_cells(test)
    saved = pd.read_csv(smoke_run / "predictions.csv")
    merged = saved.merge(table, on=["cell", "start_cycle", "step"], suffixes=("_run", "_reload"))
    assert len(merged) == len(saved)  # every evaluated point is predicted again
    np.testing.assert_allclose(merged.predicted_capacity_ah_run, merged.predicted_capacity_ah_reload,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(merged.true_capacity_ah_run, merged.true_capacity_ah_reload, rtol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["run", "imoe-synthetic", "--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["run", "imoe-synthetic", "--set", "train.epochs=three"], "bad value for train.epochs"),
        (["run", "imoe-synthetic", "--set", "model.gate=dense"], "one of authors/topk_softmax"),
        (["run", "imoe-synthetic", "--set", "data.soc_start=25"], "data.soc_start must be"),
        (["run", "imoe-synthetic", "--set", "model.top_k=9"], "model.top_k must be"),
        (["run", "imoe-synthetic", "--set", "trainepochs"], "not of the form"),
    ],
)
def test_bad_run_arguments_give_one_clear_error(args, message, capsys, tmp_path):
    assert main(args + ["--workdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_unknown_key_error_names_the_nearest_keys(capsys, tmp_path):
    assert main(["run", "imoe-synthetic", "--set", "model.experts=3", "--workdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean model.num_experts" in err[0]
    assert "slbjax show EXPERIMENT" in err[0] and not (tmp_path / "x").exists()


def test_real_data_experiment_without_data_says_how_to_supply_it(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("SLBJAX_DATA", raising=False)
    assert main(["run", "imoe-ul", "--smoke", "--workdir", str(tmp_path / "x")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # checked before the run folder is made
    (tmp_path / "empty" / "imoe").mkdir(parents=True)
    assert main(["run", "imoe-lsd", "--smoke", "--data-dir", str(tmp_path / "empty"),
                 "--workdir", str(tmp_path / "y")]) == 2
    assert "86 of the 86 file(s) of the LSD split are missing" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_predict_refuses_to_overwrite_and_reports_missing_input(smoke_run, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    assert main(["predict", "--run", str(smoke_run), "--input", str(tmp_path), "-o", str(out)]) == 2
    assert out.read_text() == "keep me"
    missing = tmp_path / "nope.csv"
    assert main(["predict", "--run", str(smoke_run), "--input", str(missing), "-o",
                 str(tmp_path / "o2.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_predict_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path), "--input", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "slbjax.cli", "list"], capture_output=True, text=True)
    assert out.returncode == 0 and "imoe-ul" in out.stdout


def test_ensemble_run_reports_intervals_and_reloads_all_members(tmp_path):
    run_dir = tmp_path / "ens"
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(run_dir),
                 "--set", "train.ensemble_size=3"]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["ensemble_size"] == 3
    for key in ("ensemble_test_mape_pct", "picp90", "interval_width90_ah", "member2_test_mape_pct"):
        assert isinstance(m[key], float), key
    assert 0.0 <= m["picp90"] <= 1.0 and m["interval_width90_ah"] > 0
    member = [m[f"member{i}_test_mape_pct"] for i in range(3)]
    assert len(set(member)) == 3  # the members differ
    saved = pd.read_csv(run_dir / "predictions.csv")
    assert {"lower90_ah", "upper90_ah"} <= set(saved.columns)
    assert (saved.lower90_ah <= saved.predicted_capacity_ah).all()
    run = load_run(run_dir)
    assert run.ensemble_size == 3
    d = run.config.data
    _, _, test = cohort_split(generate_cohort(d.synthetic_cells, d.synthetic_seed, min_cycles=d.horizon + 20))
    table = run.predict_cells(test)
    merged = saved.merge(table, on=["cell", "start_cycle", "step"], suffixes=("_run", "_reload"))
    assert len(merged) == len(saved)
    np.testing.assert_allclose(merged.predicted_capacity_ah_run, merged.predicted_capacity_ah_reload,
                               rtol=1e-5, atol=1e-6)
    # the interval is mean +- q * member std with the run's calibrated q: the reload must use
    # that q and the same member spread (held to the mean's precision, before scaling by q)
    assert m["conformal_scale_90"] == pytest.approx(run.interval_scale)
    for s in ("run", "reload"):
        merged[f"half_{s}"] = (merged[f"upper90_ah_{s}"] - merged[f"lower90_ah_{s}"]) / (2 * run.interval_scale)
    np.testing.assert_allclose(merged.half_run, merged.half_reload, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["patchtst", "informer"])
def test_baselines_train_through_the_same_runner(arch, tmp_path):
    run_dir = tmp_path / arch
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(run_dir),
                 "--set", f"model.arch={arch}", "--set", "train.epochs=2"]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < m["test_mape_pct"] < 50
    assert load_run(run_dir).model.__class__.__name__.lower() == arch
