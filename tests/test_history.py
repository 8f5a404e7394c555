"""Fig. 5a's history baselines: the polynomial against the authors' notebook, the MLP trainer."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from slbjax import history
from slbjax.data.imoe_files import load_cell_file

# Per-cell MAPE (%) printed by the authors' PolynomialFeatures.ipynb (UL-NCA files).
NOTEBOOK_POLY_MAPE = {"CY25-05_1-#1": 2.04, "CY25-05_1-#8": 5.31, "CY45-05_1-#5": 1.52,
                      "CY25-025_1-#1": 4.33, "CY35-05_1-#1": 0.22}


@pytest.mark.realdata
def test_polynomial_reproduces_the_authors_notebook_per_cell(data_dir):
    cells = [load_cell_file(data_dir / "imoe" / "UL-NCA" / f"{n}.csv") for n in NOTEBOOK_POLY_MAPE]
    short = load_cell_file(data_dir / "imoe" / "UL-NCA" / "CY25-1_1-#1.csv")  # the notebook skips it
    table = history.poly_scores([*cells, short]).set_index("cell")
    for name, printed in NOTEBOOK_POLY_MAPE.items():
        assert table.loc[name, "mape_pct"] == pytest.approx(printed, abs=0.005), name
    assert table.loc["CY25-1_1-#1", "windows"] == 0 and np.isnan(table.loc["CY25-1_1-#1", "mape_pct"])


def _fade(n, a, b, c=0.0):
    t = np.arange(n, dtype=float)
    return SimpleNamespace(name=f"fade{a}", capacity_ah=a - b * t + c * t**3)


def test_polynomial_is_exact_on_cubic_fades_and_counts_windows():
    cells = [_fade(130, 3.0, 2e-3, 1e-8), _fade(99, 2.5, 1e-3)]
    table = history.poly_scores(cells)
    assert list(table.windows) == [130 - 100 + 1, 0]
    assert table.mape_pct.iloc[0] < 1e-8 and np.isnan(table.mape_pct.iloc[1])


TINY = history.HistoryMlp(history=5, horizon=8, hidden=(16,), epochs=15, batch_size=16,
                           learning_rate=1e-2)


def _tiny_data():
    rng = np.random.default_rng(0)
    cells = [_fade(60, 2.0 + 0.1 * k, 1e-3 * (1 + k)) for k in range(4)]
    for c in cells:
        c.capacity_ah = c.capacity_ah + rng.normal(0, 1e-3, c.capacity_ah.shape)
    train = history.cell_windows(cells[:3], TINY.history, TINY.horizon)[:2]
    val = history.cell_windows(cells[3:], TINY.history, TINY.horizon)[:2]
    return train, val


def test_mlp_members_equal_separate_fits_and_learn():
    train, val = _tiny_data()
    both = history.fit_mlp(train, val, [0, 1], TINY)
    alone = history.fit_mlp(train, val, [1], TINY)
    for a, b in zip(jax.tree.leaves(both.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_allclose(np.asarray(a)[1], np.asarray(b)[0], rtol=1e-5, atol=1e-6)
    assert both.best_epoch[1] == alone.best_epoch[0]
    untrained = history.fit_mlp(train, val, [0, 1], dataclasses.replace(TINY, epochs=1, learning_rate=1e-9))
    assert np.all(both.best_val_mse < untrained.best_val_mse / 10)
    pred = history.mlp_member_predictions(both, val[0])
    assert pred.shape == (2, *val[1].shape)


def test_mlp_halves_the_learning_rate_after_a_plateau():
    train, val = _tiny_data()
    # a learning rate too small to improve the validation loss by the 1e-4 relative threshold:
    # epoch 0 sets the reference, epochs 1-3 are bad (3 > patience 2): halve, likewise at 6 and 9
    s = dataclasses.replace(TINY, epochs=10, learning_rate=1e-12, plateau_patience=2)
    result = history.fit_mlp(train, val, [0], s)
    assert result.final_learning_rate[0] == pytest.approx(1e-12 * 0.5**3, rel=1e-6)
