"""iMOE training recipes: ``train.recipe`` presets, the plateau schedule, member groups, and
test cells that choose nothing."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from slbjax.experiments import imoe_ul

from slbjax import rundir
from slbjax.cli import main
from slbjax.config import apply_overrides, describe, from_dict, to_dict
from slbjax.configs.imoe import RECIPES, ImoeConfig
from slbjax.errors import ConfigError
from slbjax.models.imoe import IMOE
from slbjax.train.imoe import Batch, fit_members
from slbjax.train.loop import Plateau


def _batch(m: int, seed: int, horizon: int = 5) -> Batch:
    rng = np.random.default_rng(seed)
    qv = np.cumsum(rng.random((m, 50), dtype=np.float32) * 0.04, axis=1)
    feats = rng.standard_normal((m, 15), dtype=np.float32)
    load = np.zeros((m, horizon, 3), np.float32)
    target = (2.5 + qv[:, -1:]) - 0.002 * np.arange(horizon, dtype=np.float32)[None, :]
    return Batch(qv, feats, load, target.astype(np.float32))


def _values(cfg) -> dict[str, str]:
    return {k: v for k, _, v in describe(cfg)}


def test_fast_recipe_sets_exactly_its_keys_and_later_keys_win():
    base = imoe_ul.get_config()
    fast = apply_overrides(base, ["train.recipe=fast"])
    changed = {k for k, v in _values(fast).items() if _values(base)[k] != v}
    assert changed == {"train.recipe", *(k for k, v in RECIPES["fast"].items()
                                         if str(v) != _values(base)[k])}
    assert fast.train.learning_rate == RECIPES["fast"]["train.learning_rate"]
    # keys set after the recipe override it; keys set before it are overridden by it
    assert apply_overrides(base, ["train.recipe=fast", "train.patience=77"]).train.patience == 77
    assert (apply_overrides(base, ["train.patience=77", "train.recipe=fast"]).train.patience
            == RECIPES["fast"]["train.patience"])
    assert apply_overrides(base, ["train.recipe=paper"]) == base  # the experiment's own values
    with pytest.raises(ConfigError, match="one of paper/fast"):
        apply_overrides(base, ["train.recipe=quick"])
    with pytest.raises(ConfigError, match="plateau_factor"):
        apply_overrides(base, ["train.plateau_factor=0"])


def test_fast_recipe_round_trips_through_a_run_folder(tmp_path):
    run = tmp_path / "fast"
    sets = ["train.recipe=fast", "train.epochs=2", "data.synthetic_cells=10"]
    argv = ["run", "imoe-synthetic", "--smoke", "--workdir", str(run)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    from slbjax.experiments import imoe_synthetic

    cfg = apply_overrides(imoe_synthetic.get_config(smoke=True), sets)
    experiment, saved = rundir.read_run_config(run)
    assert experiment == "imoe-synthetic" and from_dict(ImoeConfig, saved) == cfg
    assert from_dict(ImoeConfig, to_dict(cfg)) == cfg
    assert saved["train"]["recipe"] == "fast" and saved["train"]["plateau_patience"] == 30
    assert rundir.finished_metrics(run, cfg, experiment) is not None  # reused as this config
    assert json.loads((run / "metrics.json").read_text())["test_mape_pct"] > 0


def _fit(**kw):
    train, val = _batch(48, seed=0), _batch(16, seed=1)
    model = IMOE(num_experts=4, top_k=2, horizon=5, hidden=8, target_mean=float(train.target.mean()),
                 target_std=float(train.target.std()))
    args = dict(seeds=[0, 1, 2], epochs=12, batch_size=16, learning_rate=1e-2, patience=20, chunk=4,
                log=lambda s: None)
    return fit_members(model, train, val, **{**args, **kw})


def test_plateau_halves_the_rate_of_a_member_that_stops_improving():
    plain = _fit()
    cut = _fit(plateau=Plateau(patience=1, factor=0.5))
    assert all(r.learning_rate == pytest.approx(1e-2) for r in plain)
    for r in cut:
        vals = np.asarray(r.history["val_mse"])
        # the rate after the run: 1e-2 halved once per plateau longer than one epoch
        bad, best, cuts = 0, np.inf, 0
        for v in vals:
            bad = 0 if v < best * (1 - 1e-4) else bad + 1
            best = min(best, v)
            if bad > 1:
                cuts, bad = cuts + 1, 0
        assert r.learning_rate == pytest.approx(1e-2 * 0.5 ** cuts)
    assert any(r.learning_rate < 1e-2 for r in cut)
    # identical until the first cut
    first = plain[0].history["train_loss"][:2]
    assert cut[0].history["train_loss"][:2] == first


def test_member_groups_give_the_numbers_of_one_vmapped_program():
    together, grouped = _fit(), _fit(member_group=2)
    for a, b in zip(together, grouped, strict=True):
        assert (a.best_epoch, a.epochs_run) == (b.best_epoch, b.epochs_run)
        np.testing.assert_allclose(a.history["val_mse"], b.history["val_mse"], rtol=1e-5)
        for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params),
                        strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_test_cells_choose_nothing(tmp_path, monkeypatch):
    """With the fast recipe (plateau cuts, early stop), changing every test target changes the
    test error and nothing else: epochs, learning rates, parameters and the training and
    validation errors stay bit for bit."""
    import slbjax.runners.imoe as runner

    sets = ["--set", "train.recipe=fast", "--set", "train.epochs=12", "--set", "train.patience=3",
            "--set", "train.plateau_patience=1", "--set", "train.ensemble_size=2",
            "--set", "data.synthetic_cells=12", "--set", "train.learning_rate=3e-3"]
    assert main(["run", "imoe-synthetic", "--smoke", *sets, "--workdir", str(tmp_path / "a")]) == 0
    real = runner.prepare

    def shifted(cfg, wins):  # every test window: other capacities, another Q-V curve
        wins["test"].target[:] *= 0.9
        wins["test"].qv[:] += 0.01
        return real(cfg, wins)

    monkeypatch.setattr(runner, "prepare", shifted)
    assert main(["run", "imoe-synthetic", "--smoke", *sets, "--workdir", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "ab")
    assert a["test_mape_pct"] != b["test_mape_pct"]
    # the unprefixed interval metrics are the test cells' (as test_picp90 ...)
    on_test = {"picp90", "interval_width90_ah", "picp90_uncalibrated", "interval_width90_uncalibrated_ah"}
    same = [k for k in a if "test" not in k and "seconds" not in k and k not in on_test]
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert any(k.endswith("best_epoch") for k in same) and any("val_mape" in k for k in same)
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()


def test_report_sets_reach_every_run_that_has_the_key(tmp_path):
    from slbjax.suites import suite_points

    (tmp_path / "pulse").mkdir()
    plain = suite_points("imoe-paper", False, tmp_path)
    fast = suite_points("imoe-paper", False, tmp_path, ["train.recipe=fast"])
    assert len(plain) == len(fast) > 100
    for p, f in zip(plain, fast, strict=True):
        # the suite's own values (seeds, conditions, swept keys) stay the point's
        assert (p.table, p.group, p.model, p.x, p.seed) == (f.table, f.group, f.model, f.x, f.seed)
        assert f.cfg == apply_overrides(p.cfg, ["train.recipe=fast", *p.overrides])
        assert f.cfg.train.recipe == "fast" and f.cfg.train.seed == p.cfg.train.seed
    with pytest.raises(ConfigError, match="no run of this suite has that key"):
        suite_points("imoe-paper", True, tmp_path, ["sort.num_groups=3"])
