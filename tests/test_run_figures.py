"""Every finished run gets figures: drawn from its tables, listed in its marker, never a failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from slbjax import run_figures, rundir
from slbjax.cli import main
from slbjax.runners import imoe

TINY = ["imoe-synthetic", "--smoke", "--set", "train.epochs=1", "--set", "data.synthetic_cells=10"]
IMOE_FIGURES = ["trajectories.png", "parity.png", "per_cell_mape.png"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def figures_on(monkeypatch):
    """conftest turns run figures off for the rest of the suite."""
    monkeypatch.setenv(run_figures.SWITCH, "1")


def assert_png(path: Path) -> None:
    """A real image: PNG signature, more than a blank canvas, not one flat colour."""
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 8000, path
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200 and float(img[..., :3].std()) > 0.05


def write_imoe_tables(d: Path, members: int = 3, cells: int = 2, q: float = 2.0,
                      member_std: float = 0.01) -> None:
    """What an iMOE run writes, small: test windows of ``cells`` cells, per-cell metrics, metrics."""
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(cells):
        for start in (1, 6, 11):
            for step in range(10):
                true = 3.2 - 0.004 * (start + step) - 0.05 * c
                pred = true + 0.01 * (c + 1) * np.sin(start + step)
                row = {"cell": f"C{c}", "start_cycle": start, "step": step,
                       "predicted_capacity_ah": pred, "true_capacity_ah": true}
                if members > 1:
                    row |= {"lower90_ah": pred - q * member_std, "upper90_ah": pred + q * member_std}
                rows.append(row)
    pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
    per_cell = [{"role": "train", "cell": "T0", "mape_pct": 0.5}, {"role": "val", "cell": "V0", "mape_pct": 0.7}]
    per_cell += [{"role": "test", "cell": f"C{c}", "mape_pct": 0.3 * (c + 1)} for c in range(cells)]
    pd.DataFrame(per_cell).to_csv(d / "per_cell_metrics.csv", index=False)
    metrics = {"test_mape_pct": 0.45, "test_rmse_ah": 0.012, "test_r2": 0.8, "ensemble_size": members}
    metrics |= {f"member{i}_test_mape_pct": 0.4 + 0.05 * i for i in range(members)}
    (d / "metrics.json").write_text(json.dumps(metrics))
    if members > 1:
        (d / "data_report.json").write_text(json.dumps({"intervals": {"scale": q}}))


def fake_group(cfgs, data_dir, run_dirs):
    """iMOE's group runner without training: the tables of a 3-member ensemble."""
    for d in run_dirs:
        write_imoe_tables(Path(d))
    return [json.loads((Path(d) / "metrics.json").read_text()) for d in run_dirs]


def test_a_run_writes_figures_lists_them_and_overwrite_removes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(imoe, "train_and_evaluate_group", fake_group)
    run = tmp_path / "run"
    assert main(["run", *TINY, "--workdir", str(run)]) == 0
    marker = rundir.read_marker(run)
    assert marker["status"] == "finished" and set(IMOE_FIGURES) <= set(marker["files"])
    for name in IMOE_FIGURES:
        assert_png(run / name)
    # --overwrite removes what the run wrote, figures included, and nothing of the user's
    (run / "notes.txt").write_text("mine")
    monkeypatch.setattr(imoe, "train_and_evaluate_group", lambda cfgs, _, dirs: [{"x": 1.0} for _ in dirs])
    assert main(["run", *TINY, "--workdir", str(run), "--overwrite"]) == 0
    assert not any((run / n).exists() for n in IMOE_FIGURES)
    assert (run / "notes.txt").read_text() == "mine"
    assert not set(IMOE_FIGURES) & set(rundir.read_marker(run)["files"])


def test_figures_are_the_same_for_the_same_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(run_figures.DRAWERS, "imoe", run_figures.DRAWERS["imoe"][:1])  # the busiest
    for d in (tmp_path / "a", tmp_path / "b"):
        write_imoe_tables(d)
        assert run_figures.draw_run_figures(d) == ["trajectories.png"]
    assert (tmp_path / "a" / "trajectories.png").read_bytes() == (tmp_path / "b" / "trajectories.png").read_bytes()


def _errorbars(fig) -> np.ndarray:
    """Half-lengths of the error bars of a figure's first axes."""
    (bars,) = [c for c in fig.axes[0].containers if type(c).__name__ == "ErrorbarContainer"]
    segs = bars.lines[2][0].get_segments()
    return np.array([(s[1][1] - s[0][1]) / 2 for s in segs])


def test_per_cell_error_bars_are_the_spread_over_members(tmp_path):
    # the interval is mean +- q * member std: the bars give the std back, in % of capacity
    write_imoe_tables(tmp_path, members=3, q=2.0, member_std=0.01)
    run = run_figures._Run(tmp_path)
    pred = pd.read_csv(tmp_path / "predictions.csv")
    expected = (0.01 / pred.true_capacity_ah * 100).groupby(pred.cell).mean()
    np.testing.assert_allclose(_errorbars(run_figures.imoe_per_cell(run)), expected.to_numpy(), rtol=1e-4)
    assert "each member: 0.40 / 0.45 / 0.50 %" in run_figures.imoe_per_cell(run).axes[0].get_title()


def test_trajectories_show_at_most_six_cells_from_best_to_worst(tmp_path):
    write_imoe_tables(tmp_path, members=1, cells=9)
    fig = run_figures.imoe_trajectories(run_figures._Run(tmp_path))
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 6 and "6 of 9 test cells" in fig._suptitle.get_text()
    mapes = [float(ax.get_title().split("MAPE ")[1].rstrip(" %")) for ax in shown]
    assert mapes == sorted(mapes)
    # three predicted windows per cell, each starting at its start cycle, and the truth
    first = shown[0]
    assert [line.get_label() for line in first.get_lines()] == \
        ["measured", "from cycle 1", "from cycle 6", "from cycle 11"]


def _family(d: Path, cls: str) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"experiment": "x", "config": {"__class__": cls}}))
    return d


def _life(d: Path) -> list[str]:
    _family(d, "LifeConfig")
    cyc = np.arange(1, 41)
    pd.DataFrame([{"cell": f"L{c}", "cycle_after_measurement": k, "true_capacity_ah": 1.9 - 0.01 * k,
                   "predicted_capacity_ah": 1.9 - 0.011 * k, "lower90_ah": 1.85 - 0.012 * k,
                   "upper90_ah": 1.9 - 0.009 * k} for c in range(3) for k in cyc]).to_csv(
        d / "trajectories.csv", index=False)
    pd.DataFrame({"cell": ["L0", "L1", "L2"], "true_remaining_cycles": [300, 250, np.nan],
                  "predicted_remaining_cycles": [280, 270, 260], "lower90_cycles": [200, 190, 180],
                  "upper90_cycles": [900, 400, 380]}).to_csv(d / "cells.csv", index=False)
    return IMOE_FIGURES


def _history(d: Path) -> list[str]:
    _family(d, "HistoryConfig")
    pd.DataFrame([{"seed": s, "cell": f"H{c}", "windows": 5, "mape_pct": 1.0 + c + 0.1 * s}
                  for s in range(3) for c in range(4)]).to_csv(d / "per_cell.csv", index=False)
    return ["per_cell_mape.png"]


def _cvae(d: Path) -> list[str]:
    _family(d, "CvaeConfig")
    pd.DataFrame([{"case": c, "protocol": "test_rows", "variant": "direct", "num_seeds": 2,
                   "soh_mape_measured_pct": 10.0 + c, "soh_mape_generated_pct": 5.0 + c,
                   "soh_mape_generated_seed_std_pct": 0.5} for c in range(8)]).to_csv(
        d / "per_case.csv", index=False)
    return ["per_case_mape.png"]


def _sort(d: Path) -> list[str]:
    _family(d, "SortConfig")
    rows = []
    for i, m in enumerate(["initial", "second_refinement", "oracle"]):
        row = {"method": m, "lifetime_cycles": 270.0 + 20 * i, "aging_difference": 80.0 - 10 * i,
               "capacity_utilisation": 0.6 + 0.05 * i}
        for k in ("lifetime_cycles", "aging_difference", "capacity_utilisation"):
            spread = np.nan if m == "oracle" else 0.05 * row[k]
            row |= {f"{k}_median": row[k], f"{k}_p05": row[k] - spread, f"{k}_p95": row[k] + spread}
        rows.append(row)
    pd.DataFrame(rows).to_csv(d / "methods.csv", index=False)
    return ["methods.png"]


@pytest.mark.parametrize("family", [_life, _history, _cvae, _sort], ids=["life", "history", "cvae", "sort"])
def test_each_family_gets_the_figures_its_tables_allow(family, tmp_path):
    expected = family(tmp_path / "run")
    assert run_figures.draw_run_figures(tmp_path / "run") == expected
    for name in expected:
        assert_png(tmp_path / "run" / name)


def test_what_cannot_be_drawn_is_skipped_without_an_error(tmp_path, monkeypatch, capsys):
    # nothing at all, a family without tables, unreadable tables and JSON
    assert run_figures.draw_run_figures(tmp_path / "missing") == []
    assert run_figures.draw_run_figures(_family(tmp_path / "sort", "SortConfig")) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "predictions.csv").write_text("cell,step\nA,0\n")  # columns missing
    (bad / "per_cell_metrics.csv").write_bytes(b"\x00\xff not a table")
    (bad / "metrics.json").write_text("{not json")
    (bad / "config.json").write_text("[]")
    assert run_figures.draw_run_figures(bad) == []
    assert capsys.readouterr().err == ""
    # a figure that fails while drawing: a note, and the others are still drawn
    good = tmp_path / "good"
    write_imoe_tables(good, members=1)

    def broken(run):
        raise ValueError("no luck")

    monkeypatch.setitem(run_figures.DRAWERS, "imoe", [("trajectories.png", broken),
                                                      *run_figures.DRAWERS["imoe"][1:]])
    assert run_figures.draw_run_figures(good) == ["parity.png", "per_cell_mape.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["note: trajectories.png not drawn (ValueError: no luck)"]
    assert not (good / "trajectories.png").exists() and not list(good.glob(".*tmp*"))


def test_figures_can_be_switched_off(tmp_path, monkeypatch):
    write_imoe_tables(tmp_path, members=1)
    monkeypatch.setenv(run_figures.SWITCH, "0")
    assert run_figures.draw_run_figures(tmp_path) == [] and not list(tmp_path.glob("*.png"))
