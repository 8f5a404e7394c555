"""Data-parallel training on 8 fake CPU devices (set up in conftest)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_imoe_model import _batch, _model

from slbjax.errors import ConfigError
from slbjax.train.imoe import data_mesh, fit_members


def test_conftest_gives_eight_cpu_devices():
    assert len(jax.devices()) == 8


def test_sharded_training_equals_single_device_training():
    train, val = _batch(64, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    kw = dict(seeds=[0], epochs=4, batch_size=16, learning_rate=1e-2, patience=10, chunk=2,
              log=lambda s: None)
    single = fit_members(model, train, val, **kw)[0]
    sharded = fit_members(model, train, val, mesh=data_mesh(16), **kw)[0]
    np.testing.assert_allclose(sharded.history["train_mse"], single.history["train_mse"], rtol=1e-4)
    np.testing.assert_allclose(sharded.history["val_mse"], single.history["val_mse"], rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(sharded.params), jax.tree_util.tree_leaves(single.params),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_device_count_is_a_clear_error():
    with pytest.raises(ConfigError, match="not divisible by the 8 devices"):
        data_mesh(12)


def test_run_with_data_parallel_and_an_indivisible_batch_fails_cleanly(tmp_path, capsys):
    from slbjax.cli import main

    args = ["run", "imoe-synthetic", "--smoke", "--workdir", str(tmp_path / "r"),
            "--set", "train.data_parallel=true", "--set", "train.batch_size=12"]
    assert main(args) == 2
    assert "not divisible by the 8 devices" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_run_with_data_parallel_trains(tmp_path):
    import json

    from slbjax.cli import main

    run_dir = tmp_path / "dp"
    assert main(["run", "imoe-synthetic", "--smoke", "--workdir", str(run_dir),
                 "--set", "train.data_parallel=true", "--set", "train.batch_size=16"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["test_mape_pct"] < 50
