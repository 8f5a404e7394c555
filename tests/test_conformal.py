"""Split-conformal interval calibration: the quantile, its coverage, and its use in iMOE runs."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pandas as pd
import pytest

from slbjax import checkpoint
from slbjax.cli import main
from slbjax.data.synthetic import cohort_split, generate_cohort
from slbjax.evaluate.conformal import (
    cell_conformal_scale,
    conformal_quantile,
    conformal_scale,
    min_calibration_size,
    normalised_scores,
    scaled_interval,
    within_cell_statistic,
)
from slbjax.evaluate.intervals import Z90, calibrate_interval
from slbjax.inference import load_run

LEVEL = 0.9


def _coverage(mean, std, true, q):
    lower, upper = scaled_interval(mean, std, q)
    return float(np.mean((true >= lower) & (true <= upper)))


def _tolerance(n_cal: int, n_test: int, z: float = 4.0) -> float:
    """z standard deviations of a coverage measured on n_test fresh points with
    a q from n_cal points (conditional coverage ~ Beta: variance ~ p(1-p)/(n+2))."""
    p = LEVEL
    return z * math.sqrt(p * (1 - p) / (n_cal + 2) + p * (1 - p) / n_test)


# ------------------------------------------------------------------ the quantile by hand


def test_normalised_scores_by_hand():
    s = normalised_scores(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.5]), np.array([1.0, -3.0, 2.25]))
    np.testing.assert_allclose(s, [1.0, 2.0, 0.5])
    # a zero spread counts as 1e-3 of the median spread (here 2): 0.002
    s = normalised_scores(np.zeros(3), np.array([0.0, 2.0, 4.0]), np.array([0.01, 0.0, 0.0]))
    np.testing.assert_allclose(s, [5.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "scores, level, expected",
    [
        (list(range(9, 0, -1)), 0.9, 9.0),  # n=9: rank ceil(10 * 0.9) = 9, the maximum
        (list(range(1, 11)), 0.9, 10.0),  # n=10: rank ceil(9.9) = 10
        (list(range(19, 0, -1)), 0.9, 18.0),  # n=19: rank ceil(18.0) = 18
        ([4.0, 1.0, 3.0, 2.0], 0.8, 4.0),  # rank ceil(5 * 0.8) = 4
        ([4.0, 1.0, 3.0, 2.0], 0.6, 3.0),  # rank ceil(3.0) = 3
        ([0.3, 0.1, 0.2], 0.5, 0.2),  # rank ceil(2.0) = 2
    ],
)
def test_finite_sample_rank_by_hand(scores, level, expected):
    assert conformal_quantile(np.array(scores), level) == expected


def test_too_few_points_give_an_infinite_scale():
    assert min_calibration_size(0.9) == 9 and min_calibration_size(0.8) == 4 and min_calibration_size(0.5) == 1
    assert conformal_quantile(np.arange(1.0, 9.0), 0.9) == math.inf  # 8 < 9 points
    assert conformal_quantile(np.arange(1.0, 10.0), 0.9) == 9.0
    assert conformal_scale(np.zeros(5), np.ones(5), np.ones(5), 0.9) == math.inf
    assert conformal_quantile(np.array([]), 0.9) == math.inf
    with pytest.raises(ValueError):
        conformal_quantile(np.ones(20), 1.0)


def test_cell_level_scale_by_hand():
    # within-cell statistic: ceil(n * 0.9)-th smallest; for n = 4 that is the 4th (the max)
    assert within_cell_statistic(np.array([3.0, 1.0, 2.0, 4.0]), "quantile", 0.9) == 4.0
    # n = 10: the 9th smallest, i.e. one point in ten may stay outside
    assert within_cell_statistic(np.arange(10.0, 0.0, -1.0), "quantile", 0.9) == 9.0
    assert within_cell_statistic(np.arange(10.0), "max") == 9.0
    # nine cells of ten points whose scores are c * (1 .. 10) / 10, c = 1 .. 9
    groups = np.repeat(np.arange(9), 10)
    scores = np.concatenate([c * np.arange(1, 11) / 10 for c in range(1, 10)])
    mean, std = np.zeros_like(scores), np.ones_like(scores)
    # within-cell 90 % quantiles 0.9 c; K = 9 cells: rank ceil(10 * 0.9) = 9 -> the largest, 8.1
    assert cell_conformal_scale(mean, std, scores, groups, 0.9) == pytest.approx(8.1)
    assert cell_conformal_scale(mean, std, scores, groups, 0.9, within="max") == pytest.approx(9.0)
    # eight cells are too few for a finite rank, however many points they hold
    keep = groups < 8
    assert cell_conformal_scale(mean[keep], std[keep], scores[keep], groups[keep], 0.9) == math.inf
    # the pooled rank over the same 80 points is finite: ceil(81 * 0.9) = 73rd smallest
    assert conformal_scale(mean[keep], std[keep], scores[keep], 0.9) == np.sort(scores[keep])[72]


def test_scaled_interval():
    lo, hi = scaled_interval(np.array([1.0, 2.0]), np.array([0.5, 0.0]), 2.0)
    np.testing.assert_allclose(lo, [0.0, 2.0])
    np.testing.assert_allclose(hi, [2.0, 2.0])
    lo, hi = scaled_interval(np.array([1.0, 2.0]), np.array([0.5, 0.0]), math.inf)
    assert lo[0] == -math.inf and hi[0] == math.inf and lo[1] == hi[1] == 2.0  # no inf * 0 = nan
    with pytest.raises(ValueError):
        scaled_interval(np.zeros(2), np.ones(2), -1.0)


# ------------------------------------------------------------------ coverage on synthetic data


def _draw(rng, n, noise):
    """Points whose reported spread is mis-scaled: the truth's error is not std x N(0, 1)."""
    mean = rng.normal(3.0, 0.2, n)
    std = rng.uniform(0.005, 0.02, n)  # heteroscedastic spreads, like members' Ah spreads
    if noise == "gaussian_x2.5":  # the members' spread under-states the error 2.5x
        err = 2.5 * std * rng.standard_normal(n)
    else:  # heavy tails (Student t, 3 dof) with the right scale parameter
        err = std * rng.standard_t(3, n)
    return mean, std, mean + err


@pytest.mark.parametrize("noise, nominal_coverage", [("gaussian_x2.5", 0.489), ("student_t3", 0.80)])
def test_calibrated_interval_covers_fresh_points_at_the_level(noise, nominal_coverage):
    rng = np.random.default_rng(0)
    n_cal, n_test = 2000, 20000
    cal, test = _draw(rng, n_cal, noise), _draw(rng, n_test, noise)
    q = conformal_scale(*cal, LEVEL)
    tol = _tolerance(n_cal, n_test)
    calibrated, nominal = _coverage(*test, q), _coverage(*test, Z90)
    assert abs(calibrated - LEVEL) <= tol + 1 / (n_cal + 1), (calibrated, tol)
    assert abs(nominal - LEVEL) > tol, (nominal, tol)
    assert nominal == pytest.approx(nominal_coverage, abs=tol)  # the analytic value of 1.645 x std
    assert q > Z90


def test_finite_sample_rank_is_exact_over_calibration_draws():
    """With n = 10 Gaussian scores the expected coverage is ceil(11 * 0.9) / 11 = 10/11,
    not 0.9 and not the ~0.83 of the plain empirical 90 % quantile."""
    rng = np.random.default_rng(1)
    trials, n = 20000, 10
    scores = np.abs(rng.standard_normal((trials, n)))
    cover = np.array([math.erf(conformal_quantile(s, LEVEL) / math.sqrt(2.0)) for s in scores])  # P(|Z| <= q)
    plain = np.array([math.erf(np.quantile(s, LEVEL) / math.sqrt(2.0)) for s in scores])
    se = cover.std() / math.sqrt(trials)
    assert abs(cover.mean() - 10 / 11) < 4 * se
    assert plain.mean() < LEVEL - 10 * se  # the finite-sample rank is what reaches the level


def test_cell_level_scale_covers_new_cells_where_pooling_points_does_not():
    """Cells share a bias (their windows are dependent): pooled points give marginal
    coverage, but only ~70 % of new cells get 90 % of their points covered; the
    cell-level scale guarantees that for >= 90 % of new cells."""
    rng = np.random.default_rng(2)
    trials, k, n_pts = 1000, 19, 50
    ok_cell, ok_pooled, full_max, marginal_pooled = [], [], [], []
    for _ in range(trials):
        bias = rng.standard_normal(k + 1)
        err = bias[:, None] + rng.standard_normal((k + 1, n_pts))  # [cells, points]
        mean, std = np.zeros(k * n_pts), np.ones(k * n_pts)
        groups = np.repeat(np.arange(k), n_pts)
        true = err[:k].reshape(-1)
        q_pool = conformal_scale(mean, std, true, LEVEL)
        q_cell = cell_conformal_scale(mean, std, true, groups, LEVEL, within="quantile")
        q_max = cell_conformal_scale(mean, std, true, groups, LEVEL, within="max")
        new = np.abs(err[k])
        ok_cell.append(np.mean(new <= q_cell) >= LEVEL)
        ok_pooled.append(np.mean(new <= q_pool) >= LEVEL)
        marginal_pooled.append(np.mean(new <= q_pool))
        full_max.append(np.all(new <= q_max))
    tol = 3 * math.sqrt(LEVEL * (1 - LEVEL) / trials)
    assert np.mean(ok_cell) >= LEVEL - tol
    assert np.mean(full_max) >= LEVEL - tol
    assert np.mean(ok_pooled) < 0.8
    assert abs(np.mean(marginal_pooled) - LEVEL) < 0.03  # pooled is about right on average only


def test_calibration_without_validation_windows_keeps_the_nominal_interval():
    cal = calibrate_interval(None, None)
    assert cal.scale == Z90 and not cal.calibrated and "uncalibrated" in cal.note
    assert cal.meta()["calibrated"] is False


# ------------------------------------------------------------------ an iMOE ensemble run


@pytest.fixture(scope="module")
def ens_run(tmp_path_factory):
    """A 3-member smoke run on 60 synthetic cells (9 validation cells: the cell-level rank is finite)."""
    run_dir = tmp_path_factory.mktemp("conf") / "ens"
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(run_dir),
                 "--set", "train.ensemble_size=3", "--set", "data.synthetic_cells=60"]) == 0
    return run_dir


def _test_cells(run):
    d = run.config.data
    return cohort_split(generate_cohort(d.synthetic_cells, d.synthetic_seed, min_cycles=d.horizon + 20))[2]


def test_ensemble_run_reports_calibrated_and_uncalibrated_intervals(ens_run):
    m = json.loads((ens_run / "metrics.json").read_text())
    q = m["conformal_scale_90"]
    assert isinstance(q, float) and 0 < q < 1e3
    assert m["conformal_val_cells"] == 9 and m["conformal_val_points"] == m["val_windows"] * 20
    assert isinstance(m["conformal_scale_90_cell"], float) and m["conformal_scale_90_cell"] > 0
    for role in ("train", "val", "test"):
        for key in (f"{role}_picp90", f"{role}_interval_width90_ah", f"{role}_picp90_uncalibrated",
                    f"{role}_interval_width90_uncalibrated_ah"):
            assert isinstance(m[key], float), key
        # both intervals are mean +- scale x std of the same members: widths scale as q / 1.645
        ratio = m[f"{role}_interval_width90_ah"] / m[f"{role}_interval_width90_uncalibrated_ah"]
        assert ratio == pytest.approx(q / Z90, rel=1e-5)
    assert m["picp90"] == m["test_picp90"] and m["interval_width90_ah"] == m["test_interval_width90_ah"]
    assert m["picp90_uncalibrated"] == m["test_picp90_uncalibrated"]
    # on its own calibration points the interval covers at least the level (up to float32 ties)
    assert m["val_picp90"] >= LEVEL - 2 / m["conformal_val_points"]
    _, meta = checkpoint.load(ens_run)
    assert meta["interval90"]["scale"] == pytest.approx(q, rel=1e-12) and meta["interval90"]["calibrated"]
    report = json.loads((ens_run / "data_report.json").read_text())
    assert report["intervals"]["scale"] == pytest.approx(q, rel=1e-12)
    cells = pd.read_csv(ens_run / "per_cell_metrics.csv")
    assert {"picp90", "picp90_uncalibrated"} <= set(cells.columns)


def test_predict_cells_uses_the_stored_scale(ens_run):
    run = load_run(ens_run)
    q = json.loads((ens_run / "metrics.json").read_text())["conformal_scale_90"]
    assert run.interval_calibrated and run.interval_scale == pytest.approx(q, rel=1e-12)
    test = _test_cells(run)
    table = run.predict_cells(test)
    # each member alone (a one-member Run of its parameters) gives the members' predictions
    members = []
    for i in range(run.ensemble_size):
        one = dataclasses.replace(run, params=jax.tree_util.tree_map(lambda a, i=i: a[i:i + 1], run.params),
                                  ensemble_size=1)
        members.append(one.predict_cells(test).predicted_capacity_ah.to_numpy())
    members = np.stack(members)
    mean, std = members.mean(0), members.std(0, ddof=1)
    np.testing.assert_allclose(table.predicted_capacity_ah, mean, rtol=1e-6)
    np.testing.assert_allclose(table.lower90_ah, mean - q * std, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(table.upper90_ah, mean + q * std, rtol=1e-6, atol=1e-7)
    assert not np.allclose(table.upper90_ah - table.lower90_ah, 2 * Z90 * std)  # not the nominal one
    # and it is what the run itself wrote for its test cells (float32 members, batched
    # differently: a member differs by up to ~1e-5 Ah, which q multiplies in the std)
    saved = pd.read_csv(ens_run / "predictions.csv")
    merged = saved.merge(table, on=["cell", "start_cycle", "step"], suffixes=("_run", "_reload"))
    assert len(merged) == len(saved)
    for col in ("lower90_ah", "upper90_ah"):
        np.testing.assert_allclose(merged[f"{col}_run"], merged[f"{col}_reload"], rtol=0, atol=3e-5 * (1 + q))


def test_runs_saved_before_calibration_fall_back_to_the_nominal_scale(ens_run, monkeypatch, capsys):
    import slbjax.inference as inference

    real_load = checkpoint.load

    def old_load(path):  # a checkpoint written before intervals were calibrated
        params, meta = real_load(path)
        meta.pop("interval90")
        return params, meta

    calibrated = load_run(ens_run)
    monkeypatch.setattr(inference.checkpoint, "load", old_load)
    old = load_run(ens_run)
    assert old.interval_scale == Z90 and not old.interval_calibrated
    assert "1.645" in capsys.readouterr().err
    test = _test_cells(old)[:1]
    a, b = calibrated.predict_cells(test), old.predict_cells(test)
    np.testing.assert_allclose((b.upper90_ah - b.lower90_ah) * calibrated.interval_scale,
                               (a.upper90_ah - a.lower90_ah) * Z90, rtol=1e-6, atol=1e-9)


def test_run_without_validation_cells_notes_an_uncalibrated_interval(data_dir, tmp_path):
    run_dir = tmp_path / "tpsl"
    assert main(["run", "imoe-tpsl", "--smoke", "--data-dir", str(data_dir), "--workdir", str(run_dir),
                 "--set", "train.ensemble_size=2"]) == 0
    notes = " ".join(json.loads((run_dir / "data_report.json").read_text())["notes"])
    assert "uncalibrated" in notes
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["conformal_scale_90"] is None
    assert m["train_picp90"] == m["train_picp90_uncalibrated"]
    run = load_run(run_dir)
    assert run.interval_scale == Z90 and not run.interval_calibrated
