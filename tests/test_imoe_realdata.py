"""iMOE end to end on the published files (needs SLBJAX_DATA; small configs)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from slbjax.cli import main
from slbjax.data.imoe_files import load_cell_file
from slbjax.inference import PREDICT_COLUMNS, load_run


@pytest.fixture(scope="module")
def ul_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ul") / "run"
    assert main(["run", "imoe-ul", "--smoke", "--data-dir", str(data_dir), "--workdir", str(run_dir)]) == 0
    return run_dir


def test_ul_smoke_run_evaluates_the_reference_test_cells(ul_run):
    report = json.loads((ul_run / "data_report.json").read_text())
    assert report["cells"]["test"] == [
        "CY25-05_1-#1", "CY25-05_1-#14", "CY25-05_1-#15", "CY25-05_1-#16", "CY25-05_1-#17", "CY25-05_1-#12"
    ]
    metrics = json.loads((ul_run / "metrics.json").read_text())
    assert metrics["test_windows"] == 6 * 8  # smoke caps 8 windows per cell
    preds = pd.read_csv(ul_run / "predictions.csv")
    assert preds.true_capacity_ah.between(2.4, 3.4).all()  # Ah, not mAh


def test_predict_cli_on_a_published_file_matches_its_capacities(ul_run, data_dir, tmp_path):
    src = data_dir / "imoe" / "UL-NCA" / "CY25-05_1-#1.csv"
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(ul_run), "--input", str(src), "-o", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == PREDICT_COLUMNS
    cell = load_cell_file(src)
    horizon = load_run(ul_run).config.data.horizon
    assert len(table) == cell.num_cycles * horizon  # every cycle is a start
    first = table[table.start_cycle == cell.cycle[0]]
    np.testing.assert_allclose(first.true_capacity_ah.to_numpy(), cell.capacity_ah[:horizon], rtol=1e-9)
    last = table[table.start_cycle == cell.cycle[-1]]
    assert last.true_capacity_ah.isna().sum() == horizon - 1  # beyond the record: unknown
    # the run's own test predictions are reproduced from the file
    saved = pd.read_csv(ul_run / "predictions.csv")
    saved = saved[saved.cell == "CY25-05_1-#1"]
    merged = saved.merge(table, on=["start_cycle", "step"], suffixes=("_run", "_file"))
    assert len(merged) == len(saved)
    np.testing.assert_allclose(merged.predicted_capacity_ah_run, merged.predicted_capacity_ah_file, rtol=1e-5)


def test_predict_refuses_a_tpsl_file_for_a_ul_run(ul_run, data_dir, tmp_path, capsys):
    src = data_dir / "imoe" / "TPSL-Fixed" / "#6" / "combined_data.csv"
    assert main(["predict", "--run", str(ul_run), "--input", str(src), "-o", str(tmp_path / "p.csv")]) == 2
    assert "6" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()


def test_tpsl_run_is_honest_about_its_single_cell(data_dir, tmp_path):
    run_dir = tmp_path / "tpsl"
    assert main(["run", "imoe-tpsl", "--smoke", "--data-dir", str(data_dir), "--workdir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_mape_pct"] is None and metrics["test_windows"] == 0
    assert metrics["train_windows"] == 19
    notes = " ".join(json.loads((run_dir / "data_report.json").read_text())["notes"])
    assert "no validation sample" in notes and "no test sample" in notes
    assert "not in" in notes  # the missing reference cells are named
