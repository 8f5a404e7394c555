"""Tests of Q-V processing, physics features and the normaliser."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from scipy import stats

from slbjax.data.features import (
    FEATURE_NAMES_6,
    FEATURE_NAMES_12,
    Normaliser,
    physics_features,
    qv_features,
    relaxation_features,
    trim_soc,
)
from slbjax.data.imoe_files import load_cell_file

GRID = np.linspace(3.6, 4.15, 50)
DENSE = np.linspace(3.6, 4.15, 1000)


# --------------------------------------------------------------------------- #
# trim_soc
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("soc", "k"), [(20, 0), (30, 10), (40, 20), (50, 30)])
def test_trim_soc_matches_reference_interp(soc, k):
    rng = np.random.default_rng(soc)
    qv = np.cumsum(rng.uniform(0, 0.05, size=(7, 50)), axis=1)
    out = trim_soc(qv, soc)
    for i in range(7):
        kept = qv[i, k:]
        np.testing.assert_array_equal(out[i], np.interp(GRID, GRID[k:], kept - kept[0]))
    np.testing.assert_array_equal(out[:, : k + 1], 0.0)
    np.testing.assert_allclose(out[:, k:], qv[:, k:] - qv[:, k : k + 1])


def test_trim_soc_does_not_modify_input():
    qv = np.tile(np.arange(50.0), (2, 1))
    trim_soc(qv, 50)
    assert qv[0, 0] == 0 and qv[0, 49] == 49


@pytest.mark.parametrize("soc", [0, 10, 25, 60, None])
def test_trim_soc_rejects_other_soc(soc):
    with pytest.raises(ValueError, match="soc_start must be one of"):
        trim_soc(np.zeros((1, 50)), soc)


# --------------------------------------------------------------------------- #
# features on a 3-row UL fixture file, against hand-computed values
# --------------------------------------------------------------------------- #

RELAX = [[4.1, 4.2, 4.3], [4.0, 4.0, 4.3], [4.1, 4.1, 4.1, 4.1]]
QV_MAH = [
    40.0 * np.arange(50),  # linear, 0 .. 1960 mAh
    0.8 * np.arange(50) ** 2,  # convex, 0 .. 1920.8 mAh
    1.0 * np.arange(50),  # tiny: never rises 200 mAh
]


@pytest.fixture
def fixture_cell(tmp_path):
    path = tmp_path / "CY25-05_1-#1.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "Cycle",
                "Charge_Current",
                "Discharge_Current",
                "Temperature",
                "Capacity_Increment",
                "Relaxation_Voltage",
                "Discharge_Capacity",
            ]
        )
        for i in range(3):
            qv = "[" + ", ".join(repr(float(v)) for v in QV_MAH[i]) + "]"
            relax = "[" + ", ".join(map(str, RELAX[i])) + "]"
            w.writerow([i + 2, 0.5, 1, 25, qv, relax, 3000 - 10 * i])
    return load_cell_file(path, cache=False)


def test_feature_names():
    assert len(FEATURE_NAMES_12) == 12 and len(FEATURE_NAMES_6) == 6
    assert FEATURE_NAMES_12[6:] == FEATURE_NAMES_6


def test_relaxation_features_by_hand(fixture_cell):
    f = physics_features(fixture_cell.qv, fixture_cell.voltage_grid, fixture_cell.relaxation)
    assert f.shape == (3, 12)
    # row 0: [4.1, 4.2, 4.3]: symmetric; m2 = 0.02/3, m4 = 2e-4/3 -> kurtosis 1.5 - 3
    np.testing.assert_allclose(f[0, :6], [4.2, 0.0, 4.3, 4.1, 0.02 / 3, -1.5], atol=1e-12)
    # row 1: [4.0, 4.0, 4.3]: deviations -0.1, -0.1, 0.2; m2 = 0.02, m3 = 0.002, m4 = 0.0006
    np.testing.assert_allclose(
        f[1, :6], [4.1, 0.002 / 0.02**1.5, 4.3, 4.0, 0.02, 0.0006 / 0.02**2 - 3], atol=1e-9
    )
    # row 2: constant -> skewness and kurtosis 0 (scipy gives NaN)
    np.testing.assert_allclose(f[2, :6], [4.1, 0.0, 4.1, 4.1, 0.0, 0.0], atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy: catastrophic cancellation
        assert np.isnan(stats.skew(RELAX[2]))
    assert np.isfinite(f).all()
    # against scipy where scipy is defined
    for i in (0, 1):
        r = np.array(RELAX[i])
        expected = [r.mean(), stats.skew(r), r.max(), r.min(), r.var(), stats.kurtosis(r)]
        np.testing.assert_allclose(f[i, :6], expected, rtol=1e-9, atol=1e-12)


def test_qv_features_by_hand(fixture_cell):
    f = physics_features(fixture_cell.qv, fixture_cell.voltage_grid, fixture_cell.relaxation)
    k = np.arange(50)
    # row 0: q_k = 0.04 k Ah -> mean 0.98, skew 0, max 1.96, var 0.04^2 (50^2 - 1) / 12
    np.testing.assert_allclose(f[0, 6:10], [0.98, 0.0, 1.96, 0.0016 * 2499 / 12], atol=1e-12)
    # dense voltage index nearest 3.65 V is 91 (3.6 + 91 * 0.55/999 = 3.65100 V);
    # the line is q(j) = 0.04 * 49 * j / 999 at dense index j, so the reference
    # capacity is 1.96 * 91 / 999 and +0.2 Ah is first reached at
    # j >= 91 + 0.2 * 999 / 1.96 = 192.94 -> j = 193.
    assert np.argmin(np.abs(DENSE - 3.65)) == 91
    np.testing.assert_allclose(f[0, 10], 1.96 * 91 / 999, rtol=1e-12)
    np.testing.assert_allclose(f[0, 11], 3.6 + 193 * 0.55 / 999, rtol=1e-12)
    # row 1: q_k = 0.0008 k^2: moments against scipy on the same values
    q1 = 0.0008 * k**2
    np.testing.assert_allclose(
        f[1, 6:10], [q1.mean(), stats.skew(q1), q1.max(), q1.var()], rtol=1e-9
    )
    dense1 = np.interp(DENSE, GRID, q1)
    np.testing.assert_allclose(f[1, 10], dense1[91], rtol=1e-12)
    np.testing.assert_allclose(f[1, 11], DENSE[np.argmax(dense1 >= dense1[91] + 0.2)], rtol=1e-12)
    # row 2: max 0.049 Ah never rises 0.2 Ah -> last grid voltage (authors: NaN)
    np.testing.assert_allclose(f[2, 11], 4.15)


def test_physics_features_without_relaxation(fixture_cell):
    f6 = physics_features(fixture_cell.qv, fixture_cell.voltage_grid, None)
    f12 = physics_features(fixture_cell.qv, fixture_cell.voltage_grid, fixture_cell.relaxation)
    assert f6.shape == (3, 6)
    np.testing.assert_array_equal(f6, f12[:, 6:])


def test_features_follow_trimmed_curve(fixture_cell):
    q = trim_soc(fixture_cell.qv, 50)
    f = qv_features(q, GRID)
    np.testing.assert_allclose(f[:, 4], 0.0)  # 3.65 V is inside the zeroed part
    np.testing.assert_allclose(f[0, 2], 0.04 * 19)


def test_reference_voltage_follows_grid():
    grid = np.linspace(3.8, 4.1, 50)  # LSD's true grid: reference 3.85 V
    qv = np.linspace(0.0, 1.0, 50)[None, :]
    f = qv_features(qv, grid)
    dense = np.linspace(3.8, 4.1, 1000)
    j = np.argmin(np.abs(dense - (3.8 + 0.05)))  # 3.85 V falls half-way between 166 and 167
    np.testing.assert_allclose(f[0, 4], (dense[j] - 3.8) / 0.3, rtol=1e-12)
    v = f[0, 5]
    assert v == pytest.approx(3.85 + 0.2 * 0.3, abs=1e-3)


def test_features_constant_curve_and_large_batch():
    qv = np.zeros((5000, 50))  # more rows than one interpolation chunk
    f = qv_features(qv, GRID)
    assert np.isfinite(f).all()
    np.testing.assert_allclose(f[:, [0, 1, 2, 3, 4]], 0.0)
    np.testing.assert_allclose(f[:, 5], 4.15)


def test_relaxation_features_ragged_and_errors():
    f = relaxation_features([np.array([4.0, 4.2]), np.array([4.1, 4.1, 4.4, 4.0, 4.2])])
    r = np.array([4.1, 4.1, 4.4, 4.0, 4.2])
    np.testing.assert_allclose(
        f[1], [r.mean(), stats.skew(r), 4.4, 4.0, r.var(), stats.kurtosis(r)], rtol=1e-9
    )
    with pytest.raises(ValueError, match="empty relaxation record in row 1"):
        relaxation_features([np.array([4.0]), np.array([])])
    with pytest.raises(ValueError, match="relaxation records"):
        physics_features(np.zeros((2, 50)), GRID, [np.array([4.0])])


# --------------------------------------------------------------------------- #
# Normaliser
# --------------------------------------------------------------------------- #


def test_normaliser_fit_apply_roundtrip():
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    n = Normaliser.fit(x)
    np.testing.assert_allclose(n.mean, [3.0, 5.0, 5.0])
    np.testing.assert_allclose(n.std, [x[:, 0].std(), 1.0, x[:, 2].std()])  # zero std -> 1
    y = n.apply(x)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y[:, 1], 0.0)
    assert n.apply(x.astype(np.float32)).dtype == np.float32
    m = Normaliser.from_dict(n.to_dict())
    np.testing.assert_array_equal(m.mean, n.mean)
    np.testing.assert_array_equal(m.std, n.std)
    with pytest.raises(ValueError):
        Normaliser.fit(np.zeros((0, 3)))
