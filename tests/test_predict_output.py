"""What ``predict`` and ``triage`` tell a user: split, source, progress, training ranges and
out-of-distribution warnings, on one tiny synthetic run and cell files written here."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from slbjax import checkpoint, rundir
from slbjax.cli import main
from slbjax.config import replace, to_dict
from slbjax.configs.life import LifeConfig
from slbjax.data import life as life_data
from slbjax.data import ranges
from slbjax.data.cells import Cell
from slbjax.data.imoe_files import load_cell_file
from slbjax.data.synthetic import cohort_split, generate_cohort
from slbjax.decide.life_run import load_life_run
from slbjax.inference import PREDICT_COLUMNS, TRAJECTORY_COLUMNS, load_run
from slbjax.models.life import LifeMLP
from slbjax.runners import life as life_runner

UL_HEADER = ["Cycle", "Charge_Current", "Discharge_Current", "Temperature", "Capacity_Increment",
             "Relaxation_Voltage", "Discharge_Capacity"]


def _list(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def write_ul(path: Path, cell: Cell, scale: float = 1.0, rows: int = 60) -> Path:
    """The first ``rows`` cycles of ``cell`` as a UL-format file (mAh; few rows keep the
    tests fast); ``scale`` multiplies its capacities and Q-V curves (0.4: a smaller cell of
    the same shape).  The file's stem is the cell's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(UL_HEADER)
        for i in range(min(rows, cell.num_cycles)):
            w.writerow([int(cell.cycle[i]), repr(float(cell.charge_current[i])),
                        repr(float(cell.discharge_current[i])), repr(float(cell.temperature[i])),
                        _list(1000.0 * scale * cell.qv[i]), _list(cell.relaxation[i]),
                        repr(float(1000.0 * scale * cell.capacity_ah[i]))])
    return path


@pytest.fixture(scope="module")
def tiny(tiny_imoe_run):
    """(run folder, {role: [cells]}) of the shared tiny imoe-synthetic run."""
    run = tiny_imoe_run
    d = load_run(run).config.data
    train, val, test = cohort_split(generate_cohort(d.synthetic_cells, d.synthetic_seed,
                                                    min_cycles=d.horizon + 20))
    return run, {"train": train, "val": val, "test": test}


@pytest.fixture(scope="module")
def inputs(tiny, tmp_path_factory) -> Path:
    """A folder of cell files: one training, one validation and one test cell of the run, a copy
    of a training cell under another name, and a cell of 0.4 times the capacity (its folder
    sorts first, so a refusal stops before any prediction)."""
    _, roles = tiny
    root = tmp_path_factory.mktemp("inputs")
    for role in ("train", "val", "test"):
        cell = roles[role][0]
        write_ul(root / "cohort" / f"{cell.name}.csv", cell)
    write_ul(root / "extra" / "SPARE-1.csv", roles["train"][1])
    write_ul(root / "a-small" / "SMALL-1.csv", roles["train"][1], scale=0.4)
    return root


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_predict_writes_split_source_and_in_distribution(tiny, inputs, tmp_path, capsys):
    run, roles = tiny
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--input", str(inputs), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # progress and warnings go to stderr only
    table = pd.read_csv(out)
    assert list(table.columns) == PREDICT_COLUMNS
    assert list(table.columns[:5]) == TRAJECTORY_COLUMNS
    cells = table.drop_duplicates("source").set_index("source")
    expected = {f"cohort/{roles[r][0].name}.csv": r for r in ("train", "val", "test")}
    expected |= {"extra/SPARE-1.csv": "other", "a-small/SMALL-1.csv": "other"}
    assert cells.split.to_dict() == expected
    assert cells.loc["extra/SPARE-1.csv", "cell"] == "SPARE-1"
    # every cell of the run's own data and the renamed copy are inside, the small cell is not
    assert cells.in_distribution.to_dict() == {s: s != "a-small/SMALL-1.csv" for s in expected}
    # one warning line, for that cell, naming the field and both ranges
    warned = _warnings(captured.err)
    assert len(warned) == 1
    assert warned[0].startswith("warning: a-small/SMALL-1.csv: capacity ")
    assert "outside the training range" in warned[0] and "Ah" in warned[0]
    assert warned[0].endswith("(synthetic-trained run)")
    # progress: the closing line counts every cell and row
    assert f"[predict] 5/5 cells, {len(table)} rows" in captured.err.splitlines()
    assert "5 cells: 1 train, 1 val, 1 test, 2 other; 1 out of distribution" in captured.err


def test_the_run_records_its_training_ranges(tiny):
    run, roles = tiny
    tr = ranges.read(run)
    assert tr is not None and tr.family == "imoe" and tr.trained_on == "synthetic"
    assert tr.cells == tuple(c.name for c in roles["train"])
    fields = {f.key: f for f in tr.fields}
    cap = np.concatenate([c.capacity_ah for c in roles["train"]])
    assert (fields["capacity_ah"].lo, fields["capacity_ah"].hi) == (cap.min(), cap.max())
    temps = np.concatenate([c.temperature for c in roles["train"]])
    assert (fields["temperature_c"].lo, fields["temperature_c"].hi) == (temps.min(), temps.max())
    assert {"charge_current", "discharge_current", "feature:relax_mean",
            "feature:qv_voltage_at_ref_plus_delta"} <= set(fields)
    assert sum(f.is_feature for f in tr.fields) == 12
    # the file is one of the run's outputs (an --overwrite removes it with the rest)
    assert ranges.RANGES_FILE in rundir.read_marker(run)["files"]


def test_refuse_out_of_distribution_writes_nothing(tiny, inputs, tmp_path, capsys):
    run, _ = tiny
    out = tmp_path / "pred.csv"
    args = ["predict", "--run", str(run), "--input", str(inputs), "-o", str(out),
            "--refuse-out-of-distribution"]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: a-small/SMALL-1.csv: capacity ")
    assert "nothing was written" in errors[0] and not _warnings(err)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_in_distribution_cells_are_not_warned_nor_refused(tiny, inputs, tmp_path, capsys):
    run, roles = tiny
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--input", str(inputs / "cohort"), "-o", str(out),
                 "--refuse-out-of-distribution"]) == 0
    err = capsys.readouterr().err
    assert not _warnings(err) and "out-of-distribution check" not in err
    table = pd.read_csv(out)
    assert table.in_distribution.all() and set(table.split) == {"train", "val", "test"}
    # a single file: its source is its name
    name = roles["test"][0].name
    one = load_run(run).predict(inputs / "cohort" / f"{name}.csv", progress=False)
    assert set(one.source) == {f"{name}.csv"} and set(one.split) == {"test"}


def test_a_run_without_training_ranges_still_predicts(tiny, inputs, tmp_path, capsys):
    run, _ = tiny
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns(ranges.RANGES_FILE, rundir.LOCK_FILE))
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(old), "--input", str(inputs / "a-small"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "no out-of-distribution check was done" in line]
    assert len(notes) == 1 and not _warnings(err)
    table = pd.read_csv(out)
    assert table.in_distribution.isna().all() and set(table.split) == {"other"} and len(table) > 0
    # refusing needs the ranges: one error, nothing written
    out2 = tmp_path / "pred2.csv"
    assert main(["predict", "--run", str(old), "--input", str(inputs / "a-small"), "-o", str(out2),
                 "--refuse-out-of-distribution"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert not out2.exists()


def test_a_file_named_like_a_run_cell_but_different_is_other(tiny, inputs, monkeypatch):
    run, roles = tiny
    r = load_run(run)
    cell = load_cell_file(inputs / "cohort" / f"{roles['train'][0].name}.csv")
    assert r.split_of(cell) == "train"  # the synthetic run read no file: names decide
    monkeypatch.setattr(r, "data_hashes", frozenset({"0" * 64}))  # as if it had read other files
    assert r.split_of(cell) == "other"


# ------------------------------------------------------------------------------ triage
@pytest.fixture(scope="module")
def life_run(tiny, tmp_path_factory) -> tuple[Path, list[Cell]]:
    """A life run folder of untrained members (what triage reads of a finished run), with
    the training ranges of five synthetic cells; and those cells, read from their files."""
    _, roles = tiny
    root = tmp_path_factory.mktemp("life-inputs")
    cells = [load_cell_file(write_ul(root / f"{c.name}.csv", c)) for c in roles["train"][:5]]
    cfg = replace(LifeConfig(), {"model.hidden": (8,), "model.soh_hidden": (8,), "model.levels": 3,
                                 "train.ensemble_size": 2})
    m, members = cfg.data.measured_cycles, cfg.train.ensemble_size
    arrivals = life_data.build_arrivals(cells, [[0, 10]] * len(cells), m, cfg.end_ah, 3)
    run = tmp_path_factory.mktemp("life") / "run"
    run.mkdir()

    def stacked(net, width, seed):  # random members of the module's parameter shapes
        shapes = jax.eval_shape(net.init, jax.random.key(0), np.zeros(width, np.float32))
        rng = np.random.default_rng(seed)
        return jax.tree_util.tree_map(
            lambda a: rng.normal(0.0, 0.1, (members, *a.shape)).astype(np.float32), shapes)

    def stats(width, z_mean):
        return {"x_mean": [[0.0] * width] * members, "x_std": [[1.0] * width] * members,
                "z_mean": [z_mean] * members, "z_std": [0.1] * members}

    f, f_soh = len(life_data.FEATURE_NAMES), len(life_data.SOH_FEATURE_NAMES)
    params = {"life": stacked(LifeMLP(hidden=(8,), levels=3), f, 0),
              "soh": stacked(LifeMLP(hidden=(8,), levels=0), f_soh, 1)}
    checkpoint.save(run, 1, params, {
        "family": "life", "config": to_dict(cfg), "hparams": stats(f, float(np.log(300.0))),
        "soh_hparams": stats(f_soh, 80.0), "conformal_scale": 1.0,
        "trajectory_conformal_scale": 1.0})
    rundir.write_config(run, "life-lsd", cfg)
    life_runner.training_ranges(cells, arrivals).write(run)
    return run, cells


def test_life_training_ranges_cover_the_arrival_features(life_run):
    run, cells = life_run
    tr = load_life_run(run).training_ranges
    assert tr.family == "life" and tr.trained_on == "UL" and len(tr.cells) == 5
    keys = [f.key for f in tr.fields]
    assert keys[:4] == ["capacity_ah", "temperature_c", "charge_current", "discharge_current"]
    assert keys[4:] == [f"feature:{n}" for n in life_data.FEATURE_NAMES]


def test_triage_marks_and_counts_out_of_distribution_cells(tiny, life_run, tmp_path, capsys):
    run, cells = life_run
    _, roles = tiny
    field = tmp_path / "field"
    for c in roles["train"][:5]:
        write_ul(field / f"{c.name}.csv", c)
    write_ul(field / "SMALL-1.csv", roles["train"][0], scale=0.4)
    out = tmp_path / "out"
    assert main(["triage", "--run", str(run), "--input", str(field), "--groups", "2",
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    warned = _warnings(err)
    assert len(warned) == 1 and warned[0].startswith("warning: SMALL-1.csv: capacity ")
    assert warned[0].endswith("(UL-trained run)")
    table = pd.read_csv(out / "cells.csv")
    assert table.set_index("cell").in_distribution.to_dict() == {
        **{c.name: True for c in cells}, "SMALL-1": False}
    summary = json.loads((out / "triage.json").read_text())
    assert summary["num_out_of_distribution"] == 1 and summary["range_check"] is True
    assert "out of the training distribution: 1 of 6 cells" in (out / "report.md").read_text()
    # refused: one error line and no output folder
    out2 = tmp_path / "out2"
    assert main(["triage", "--run", str(run), "--input", str(field), "--groups", "2",
                 "-o", str(out2), "--refuse-out-of-distribution"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: SMALL-1.csv: capacity ")
    assert not _warnings(err) and not out2.exists()
