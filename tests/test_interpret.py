"""``slbjax interpret``: per-member weights, label matching, the SOH classifier's cells,
noise importance of an ignored feature, and every promised file of a smoke run."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from slbjax.cli import main
from slbjax.data.features import Normaliser
from slbjax.data.windows import Batch, Windows
from slbjax.inference import Run
from slbjax.interpret import perturb, stats
from slbjax.interpret.labels import align_members, chosen, match, relabel, soh_order
from slbjax.interpret.samples import Routed, RoutedRun, member_apply, route_run
from slbjax.models.imoe import IMOE
from slbjax.train.loop import member_params

SMOKE = ["--smoke", "--set", "data.synthetic_cells=20"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    """A finished 2-member smoke ensemble of imoe-synthetic."""
    run_dir = tmp_path_factory.mktemp("runs") / "ens"
    assert main(["run", "imoe-synthetic", *SMOKE, "--set", "train.ensemble_size=2",
                 "--workdir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "lin"
    assert main(["run", "imoe-synthetic", *SMOKE, "--set", "model.router=linear", "--workdir", str(run_dir)]) == 0
    return run_dir


def test_router_weights_csv_holds_every_member(ensemble_run):
    table = pd.read_csv(ensemble_run / "router_weights.csv")
    assert list(table.columns[:4]) == ["member", "cell", "start_cycle", "soh_start"]
    rr = route_run(ensemble_run, None)
    test = rr.roles["test"]
    n, m, e = test.weights.shape
    assert n == 2 and len(table) == n * m
    for k in range(n):
        rows = table[table.member == k]
        np.testing.assert_allclose(rows[[f"w{i}" for i in range(e)]].to_numpy(), test.weights[k], rtol=1e-6)
        np.testing.assert_allclose(rows.soh_start.to_numpy(), test.soh, rtol=1e-6)
        assert list(rows.cell) == list(test.cells)
    # the two members are different models: their weights are not one table repeated
    assert not np.allclose(test.weights[0], test.weights[1])


def test_matching_recovers_a_known_permutation():
    rng = np.random.default_rng(0)
    m, e, k = 400, 5, 2
    soh = rng.uniform(0.7, 1.0, m)
    # experts chosen by SOH band: a clear specialisation to recover
    logits = -np.abs(soh[:, None] - np.linspace(1.0, 0.7, e)[None, :]) * 40 + rng.normal(0, 0.3, (m, e))
    w = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    perm = np.array([3, 0, 4, 1, 2])
    other = w[:, perm]  # other's expert j is w's expert perm[j]
    found = match(w, other, k)
    np.testing.assert_array_equal(other[:, found], w)
    # ordering by SOH: label 0 is the expert of the freshest samples
    order = soh_order(w, soh, k)
    np.testing.assert_array_equal(order, np.arange(e))
    perms = align_members(np.stack([other, w]), soh, k)
    aligned = relabel(np.stack([other, w]), perms)
    np.testing.assert_array_equal(aligned[0], aligned[1])
    np.testing.assert_array_equal(aligned[1], w)
    assert chosen(w, k).sum(1).tolist() == [k] * m


def test_regimes_and_switch_soh_on_constructed_weights():
    soh = np.linspace(1.0, 0.7, 300)
    w = np.zeros((300, 3))
    w[soh >= 0.86, 0] = 1
    w[(soh < 0.86) & (soh >= 0.80), 1] = 1
    w[soh < 0.80, 2] = 1
    labels, switch = stats.regimes(w, soh, n=3)
    assert labels[0] == 0 and labels[-1] == 2
    np.testing.assert_allclose(switch, [0.86, 0.80], atol=0.002)
    assert stats.regime_agreement([labels, labels]) == pytest.approx(1.0)


def test_soh_classifier_is_scored_on_test_cells_only(ensemble_run, tmp_path, monkeypatch):
    calls = []
    real = stats.classify_soh

    def spy(train_w, train_soh, test_w, test_soh):
        calls.append((train_soh.copy(), test_soh.copy()))
        return real(train_w, train_soh, test_w, test_soh)

    monkeypatch.setattr(stats, "classify_soh", spy)
    out = tmp_path / "it"
    assert main(["interpret", str(ensemble_run), "-o", str(out), "--draws", "2"]) == 0
    rr = route_run(ensemble_run, None)
    fits = [c for c in calls if len(c[1]) == rr.roles["test"].batch.size and len(c[0]) == rr.roles["train"].batch.size]
    assert len(fits) == 2  # one per member
    for train_soh, test_soh in fits:
        np.testing.assert_array_equal(train_soh, rr.roles["train"].soh)
        np.testing.assert_array_equal(test_soh, rr.roles["test"].soh)
    assert not set(rr.roles["train"].windows.cell_names) & set(rr.roles["test"].windows.cell_names)
    # leave-one-cell-out: every fit leaves the scored cell out
    test = rr.roles["test"]
    loco = [c for c in calls if len(c[1]) < test.batch.size]
    assert len(loco) == len(set(test.cells))
    for train_soh, held in loco:
        assert len(train_soh) + len(held) == test.batch.size


def _tiny_routed(ignored: int) -> RoutedRun:
    """A random 3-expert iMOE whose router ignores feature ``ignored``."""
    e, f, length, m = 3, 4, 6, 64
    model = IMOE(num_experts=e, top_k=1, horizon=length, hidden=4, target_mean=2.5, target_std=0.2)
    rng = np.random.default_rng(1)
    qv = np.sort(rng.uniform(0, 1.5, (m, 50)), axis=1).astype(np.float32)
    feats = rng.standard_normal((m, f)).astype(np.float32)
    load = rng.standard_normal((m, length, 3)).astype(np.float32)
    params = model.init(jax.random.key(0), qv[0], feats[0], load[0])
    kernel = np.array(params["params"]["router"]["logits"]["kernel"]) * 20.0
    kernel[ignored] = 0.0
    params["params"]["router"]["logits"]["kernel"] = kernel
    stacked = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], params)
    run = Run(path=None, experiment="tiny", config=None, params=stacked, ensemble_size=1,
              feature_normaliser=Normaliser(np.zeros(f), np.ones(f)),
              load_normaliser=Normaliser(np.zeros(3), np.ones(3)), model=model)
    pred, _ = model.apply(member_params(stacked, 0), qv[0], feats[0], load[0])
    target = (np.asarray(pred)[None] + rng.normal(0, 0.05, (m, length))).astype(np.float32)
    w = Windows(qv=qv, features=feats, load=load, target=target, cell_index=np.arange(m) % 4,
                start_row=np.arange(m), start_cycle=np.arange(m), cell_names=["a", "b", "c", "d"], report={})
    rr = RoutedRun(run, 3.0, {}, member_apply(run))
    batch = Batch(qv, feats, load, target)
    p, wt, tr = rr.evaluate(batch)
    rr.roles["test"] = Routed(w, batch, p, wt, tr, soh=target[:, 0] / 3.0, life=np.linspace(0, 1, m))
    return rr


def test_cell_resampled_intervals():
    # every cell has the same ratio: no resampling can move it
    lo, hi = stats.cell_resampled_ratio(np.array([2.0, 4.0, 6.0]), np.array([1, 2, 3]))
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    # cells of ratio 1 and 3 (equal weight): the interval lies between them and straddles 2
    lo, hi = stats.cell_resampled_ratio(np.array([1.0, 3.0] * 5), np.ones(10))
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    # a cell without samples is never drawn; [C, F] sums give one interval per column
    lo, hi = stats.cell_resampled_ratio(np.array([[1.0, 0.0], [9.0, 9.0], [3.0, 0.0]]), np.array([1, 0, 3]))
    assert np.allclose(lo, [1.0, 0.0]) and np.allclose(hi, [1.0, 0.0])
    # no cell with samples (e.g. a model whose attributions are all zero): no interval
    lo, hi = stats.cell_resampled_ratio(np.zeros((3, 2)), np.zeros(3))
    assert lo.shape == (2,) and np.isnan(lo).all() and np.isnan(hi).all()


def test_mape_by_soh_intervals_resample_the_cells_of_a_band():
    soh = np.array([0.95, 0.95, 0.95, 0.95, 0.85, 0.85, 0.60])
    cells = np.array([0, 0, 1, 1, 0, 2, 2])  # cell index of each sample
    target = np.ones((7, 2))
    err = np.array([0.01, 0.01, 0.03, 0.03, 0.02, 0.02, 0.5])  # relative error of each sample
    bands = stats.mape_by_soh(target * (1 + err[:, None]), target, soh, cells)
    b95, b85, b75 = bands["soh95"], bands["soh85"], bands["soh75"]
    assert (b95["samples"], b95["cells"]) == (4, 2) and b95["mape_pct"] == pytest.approx(2.0)
    assert 1.0 - 1e-9 <= b95["p05"] < 2.0 < b95["p95"] <= 3.0 + 1e-9  # cells at 1 % and 3 %
    assert (b85["samples"], b85["cells"]) == (2, 2)  # two cells at the same error: no spread
    assert b85["p05"] == pytest.approx(2.0) and b85["p95"] == pytest.approx(2.0)
    assert b75["samples"] == 0 and np.isnan(b75["mape_pct"]) and np.isnan(b75["p05"])
    assert bands["class2"]["mape_pct"] == pytest.approx(50.0)


def test_noise_on_a_feature_the_router_ignores_changes_nothing():
    rr = _tiny_routed(ignored=2)
    base, rows = perturb.noise_importance(rr, ["f0", "f1", "f2", "f3"], draws=3)
    ignored = rows[2]
    assert ignored["delta_mape_pct"] == 0.0 and ignored["expert_change_rate"] == 0.0
    assert ignored["delta_p05"] == 0.0 and ignored["delta_p95"] == 0.0
    assert max(r["expert_change_rate"] for r in rows) > 0  # the others do move the router
    share = perturb.router_attribution(rr)
    assert share[0, 2] == 0.0 and share.sum() == pytest.approx(1.0)
    ig = perturb.integrated_gradients(rr, steps=4)
    assert ig.mean_abs_ah[2] == 0.0 and ig.mean_abs_ah.sum() > 0
    assert ig.share_p05[2] == 0.0 and ig.share_p95[2] == 0.0  # no resampling of cells gives it a share
    assert np.all(ig.share_p05 <= ig.share + 1e-12) and np.all(ig.share <= ig.share_p95 + 1e-12)
    assert np.any(ig.share_p95 > ig.share_p05)  # the cells differ, so the others' shares do


def test_knockout_of_an_unused_expert_changes_nothing():
    rr = _tiny_routed(ignored=0)
    test = rr.roles["test"]
    used = chosen(test.weights[0], 1).any(0)
    perms = np.arange(3)[None]
    base, rows = perturb.knockout(rr, perms)
    for j in range(3):
        deltas = [rows[j][f"class{c}_delta_mape_pct"] for c in range(3)]
        if not used[j]:
            # top-1 with the authors' gate: an unused expert still carries a little weight
            assert np.nanmax(np.abs(deltas)) < 0.5
    assert any(np.nanmax(np.abs([rows[j][f"class{c}_delta_mape_pct"] for c in range(3)])) > 0
               for j in range(3) if used[j])


def test_interpret_writes_every_promised_file(ensemble_run, linear_run, tmp_path):
    out = tmp_path / "interp"
    assert main(["interpret", str(ensemble_run), "-o", str(out), "--draws", "2", "--linear", str(linear_run)]) == 0
    for name in ("interpret.md", "metrics.json", "router_weights.csv", "specialisation.csv",
                 "noise_importance.csv", "permutation_importance.csv", "knockout.csv", "attributions.csv"):
        assert (out / name).stat().st_size > 0, name
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == sorted(["fig4a_weights_heatmap.png", "fig4b_weights_over_life.png", "fig4c_tsne_pooled.png",
                           "fig4c_tsne_per_cell.png", "fig4d_soh_classes.png", "fig4e_mape_by_soh.png",
                           "fig4f_noise_importance.png", "permutation_importance.png",
                           "expert_specialisation.png", "expert_knockout.png", "attributions.png"])
    md = (out / "interpret.md").read_text()
    for fig in figs:
        assert f"figures/{fig}" in md
    m = json.loads((out / "metrics.json").read_text())
    assert m["members"] == 2 and 0 <= m["soh_class_accuracy_mean"] <= 1
    assert "embedding_linear_mae_pct" in m and "regime_agreement_ari" in m
    weights = pd.read_csv(out / "router_weights.csv")
    assert set(weights.role) == {"train", "val", "test"} and set(weights.member) == {0, 1}
    # the output folder is never overwritten without being asked
    assert main(["interpret", str(ensemble_run), "-o", str(out)]) == 2


def test_interpret_refuses_a_run_without_router(linear_run, tmp_path, capsys):
    assert main(["interpret", str(linear_run), "-o", str(tmp_path / "x")]) == 2
    assert "no router" in capsys.readouterr().err
