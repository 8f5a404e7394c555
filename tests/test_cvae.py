"""CVAE model, vectorised training, runner end to end and generation."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_pulse_data import lfp_layout_rows, write_workbook

from slbjax import checkpoint, experiments
from slbjax import config as cfglib
from slbjax.configs.cvae import CvaeConfig
from slbjax.data import pulse_cases, pulse_synthetic
from slbjax.errors import ConfigError, RunDirError
from slbjax.evaluate.generation import generation_errors
from slbjax.inference import generate
from slbjax.models.cvae import CrossAttention, PulseCVAE, loss_terms, reparameterize
from slbjax.runners import cvae as runner
from slbjax.train import cvae as trainer

REQUIRED_KEYS = [
    *(f"case{k}_{m}" for k in range(8) for m in (
        "soh_mape_measured_pct", "soh_mape_generated_pct", "generation_mape_pct"
    )),
    *(f"case{k}_soh_mape_generated_pct_honest" for k in range(8)),
    *(f"case{k}_soh_mape_generated_pct_eq89" for k in range(4, 8)),
    *(f"case{k}_soh_mape_generated_pct_eq89_honest" for k in range(4, 8)),
    "interp_soh_mape_generated_pct",
    "extrap_soh_mape_generated_pct",
    "extrap_soh_mape_generated_pct_eq89",
    "interp_soh_mape_generated_pct_honest",
    "extrap_soh_mape_generated_pct_honest",
    "selected_interp_soh_mape_generated_pct",
    "selected_extrap_soh_mape_generated_pct",
    "train_seconds",
]  # fmt: skip


# -------------------------------------------------------------------- model
@pytest.mark.parametrize("heads", [1, 3])
def test_cross_attention_shapes(heads):
    att = CrossAttention(num_heads=heads, head_dim=4, out_dim=5)
    q, ctx = jnp.ones((7, 3)), jnp.ones((6, 2))
    params = att.init(jax.random.key(0), q, ctx)
    out = att.apply(params, q, ctx)
    chex.assert_shape(out, (7, 5))
    assert params["params"]["query_kernel"].shape == (3, heads, 4)
    assert params["params"]["key_kernel"].shape == (2, heads, 4)
    assert params["params"]["out_kernel"].shape == (heads, 4, 5)
    # out_dim defaults to the query width
    att2 = CrossAttention(num_heads=heads, head_dim=4)
    chex.assert_shape(att2.apply(att2.init(jax.random.key(1), q, ctx), q, ctx), (7, 3))


def test_cross_attention_mask():
    att = CrossAttention(num_heads=2, head_dim=4)
    q = jax.random.normal(jax.random.key(0), (5, 3))
    ctx = jax.random.normal(jax.random.key(1), (6, 2))
    params = att.init(jax.random.key(2), q, ctx)
    mask = jnp.ones((5, 6), bool).at[:, 4:].set(False)
    out = att.apply(params, q, ctx, mask)
    # masked context tokens do not matter ...
    ctx2 = ctx.at[4:].set(100.0)
    np.testing.assert_allclose(att.apply(params, q, ctx2, mask), out, rtol=1e-6, atol=1e-6)
    # ... and equal attention over the unmasked tokens only
    np.testing.assert_allclose(att.apply(params, q, ctx[:4]), out, rtol=1e-5, atol=1e-6)
    # an all-true mask is no mask
    np.testing.assert_allclose(
        att.apply(params, q, ctx, jnp.ones((5, 6), bool)), att.apply(params, q, ctx), rtol=1e-6
    )
    with pytest.raises(AssertionError):
        att.apply(params, q, ctx, jnp.ones((5, 5), bool))


@pytest.mark.parametrize("heads", [1, 2])
def test_scalar_token_fast_path_equals_general_attention(heads):
    fast = CrossAttention(num_heads=heads, head_dim=16, out_dim=1)
    general = CrossAttention(num_heads=heads, head_dim=16, out_dim=1, scalar_fast_path=False)
    q = jax.random.normal(jax.random.key(0), (12, 1))
    ctx = jax.random.normal(jax.random.key(1), (10, 1))
    params = fast.init(jax.random.key(2), q, ctx)
    # non-zero biases, so that every term of the rank-one identity is exercised
    params = jax.tree_util.tree_map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(3), p.shape), params
    )
    mask = jnp.ones((12, 10), bool).at[:, 7:].set(False)
    for m in (None, mask):
        np.testing.assert_allclose(
            fast.apply(params, q, ctx, m), general.apply(params, q, ctx, m), rtol=1e-5, atol=1e-6
        )


def test_scalar_token_attention_gradients_match_autodiff():
    """The hand-written VJP equals autodiff of the materialised softmax."""
    from slbjax.models.cvae import scalar_token_attention

    slope = 2.0 * jax.random.normal(jax.random.key(0), (3, 7))
    e = jax.random.normal(jax.random.key(1), (9,))
    g = jax.random.normal(jax.random.key(2), (3, 7))

    def reference(s, x):
        return jnp.einsum("hqk,k->hq", jax.nn.softmax(s[..., None] * x[None, None], axis=-1), x)

    np.testing.assert_allclose(scalar_token_attention(slope, e), reference(slope, e), rtol=1e-5)
    fast = jax.grad(lambda s, x: jnp.sum(g * scalar_token_attention(s, x)), argnums=(0, 1))(slope, e)
    ref = jax.grad(lambda s, x: jnp.sum(g * reference(s, x)), argnums=(0, 1))(slope, e)
    for a, b in zip(fast, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cvae_shapes_one_sample_and_vmapped():
    model = PulseCVAE(embed_dim=8, intermediate_dim=6, latent_dim=2)
    x, c = jnp.full((21,), 0.5), jnp.array([0.3, 0.9])
    params = jax.jit(model.init)({"params": jax.random.key(0), "latent": jax.random.key(1)}, x, c)
    fn = lambda xi, ci, ki: model.apply(params, xi, ci, rngs={"latent": ki})  # noqa: E731
    x_hat, mean, logvar = jax.jit(fn)(x, c, jax.random.key(2))
    chex.assert_shape(x_hat, (21,))
    chex.assert_shape([mean, logvar], (2,))
    assert bool(jnp.all((x_hat > 0) & (x_hat < 1)))
    xs, cs = jnp.tile(x, (9, 1)), jnp.tile(c, (9, 1))
    keys = jax.random.split(jax.random.key(3), 9)
    xb, mb, lb = jax.jit(jax.vmap(fn))(xs, cs, keys)
    chex.assert_shape(xb, (9, 21))
    chex.assert_shape([mb, lb], (9, 2))
    z = jnp.zeros((2,))
    chex.assert_shape(model.apply(params, z, c, method=PulseCVAE.decode), (21,))
    with pytest.raises(AssertionError):
        model.apply(params, jnp.ones((20,)), c, rngs={"latent": jax.random.key(4)})


def test_reparameterize_and_loss():
    key = jax.random.key(0)
    mean, logvar = jnp.array([1.0, -2.0]), jnp.array([0.0, 0.0])
    z1, z2 = reparameterize(key, mean, logvar), reparameterize(key, mean, logvar)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_allclose(reparameterize(key, mean, jnp.full(2, -60.0)), mean, atol=1e-6)
    x, x_hat = jnp.array([0.0, 1.0, 0.5]), jnp.array([0.5, 1.0, 0.0])
    rec, kl = loss_terms(x, x_hat, jnp.zeros(2), jnp.zeros(2))
    assert float(rec) == pytest.approx(0.5)  # 3 * mean([0.25, 0, 0.25]) = sum of squares
    assert float(kl) == pytest.approx(0.0)
    _, kl = loss_terms(x, x_hat, jnp.array([1.0, 0.0]), jnp.zeros(2))
    assert float(kl) == pytest.approx(0.5)


def test_minmax_roundtrip_and_constant_column():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    lo, hi = trainer.fit_minmax(x)
    y = trainer.minmax_apply(x, lo, hi)
    np.testing.assert_allclose(y, [[0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(trainer.minmax_invert(y, lo, hi), x)


# ----------------------------------------------------------------- training
def test_vmapped_training_equals_separate_training():
    data = pulse_synthetic.make_cohort(8, seed=0)
    x, c = data.features, data.conditions
    # 48 and 16 training rows: with B = 16 member 1 idles for 2 of the 3 steps
    cases = [(5, 15, 25, 35, 45, 50), (5, 10)]
    masks = np.stack([np.isin(data.soc_pct, lv) for lv in cases])
    f_lo = np.stack([x[m].min(0) for m in masks])
    f_hi = np.stack([x[m].max(0) for m in masks])
    inputs = trainer.MemberInputs(
        features=x,
        conditions=c,
        train_mask=masks,
        feature_lo=f_lo,
        feature_hi=f_hi,
        cond_lo=np.tile(c.min(0), (2, 1)),
        cond_hi=np.tile(c.max(0), (2, 1)),
        keys=jnp.stack([trainer.member_key(0, 0, k) for k in (0, 7)]),
        w_rec=np.full(2, 0.5),
        w_kl=np.full(2, 0.5),
    )
    model = PulseCVAE(embed_dim=4, intermediate_dim=4)
    kw = dict(epochs=2, batch_size=16, learning_rate=1e-3, fast_compile=True)
    together = trainer.train_members(model, inputs, member_group=0, **kw)
    assert trainer.steps_per_epoch(inputs.train_mask, 16) == 3
    # members run as a lax.map over groups of one vmapped member: same numbers
    grouped = trainer.train_members(model, inputs, member_group=1, **kw)
    for g, t in zip(grouped, together, strict=True):
        chex.assert_trees_all_close(g.params, t.params, rtol=1e-5, atol=1e-6)
    for i in range(2):
        alone = trainer.train_members(model, inputs.member(i), **kw)[0]
        assert trainer.steps_per_epoch(inputs.member(i).train_mask, 16) == [3, 1][i]
        chex.assert_trees_all_close(together[i].params, alone.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together[i].history["train_loss"], alone.history["train_loss"],
                                   rtol=1e-5)
    # the two members really trained differently
    assert not np.allclose(together[0].history["train_loss"], together[1].history["train_loss"])


def test_other_learning_rates_reuse_the_compiled_program():
    from slbjax.train import loop

    data = pulse_synthetic.make_cohort(4, seed=1)
    mask = np.isin(data.soc_pct, (5, 10, 15))[None]
    x, c = data.features, data.conditions
    inputs = trainer.MemberInputs(
        features=x, conditions=c, train_mask=mask,
        feature_lo=x[mask[0]].min(0)[None], feature_hi=x[mask[0]].max(0)[None],
        cond_lo=c.min(0)[None], cond_hi=c.max(0)[None],
        keys=trainer.member_key(0, 0, 3)[None], w_rec=np.full(1, 0.5), w_kl=np.full(1, 0.5),
    )
    model = PulseCVAE(embed_dim=4, intermediate_dim=4)
    kw = dict(epochs=2, batch_size=16, fast_compile=True)
    first = trainer.train_members(model, inputs, learning_rate=1e-3, **kw)[0]
    before = loop.compilations()
    runs = [trainer.train_members(model, inputs, learning_rate=lr, **kw)[0] for lr in (3e-3, 1e-2)]
    assert loop.compilations() == before  # no new program for other learning rates
    losses = [r.history["train_loss"][-1] for r in (first, *runs)]
    assert len(set(losses)) == 3  # ... and the rates did change the training
    assert [r.learning_rate for r in runs] == pytest.approx([3e-3, 1e-2])


# ------------------------------------------------------------------- runner
def smoke_config(**data_kw) -> CvaeConfig:
    cfg = experiments.load("cvae-synthetic").get_config(smoke=True)
    if data_kw:
        cfg = cfglib.apply_overrides(cfg, [f"data.{k}={v}" for k, v in data_kw.items()])
    return cfg


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cvae-run")
    cfg = smoke_config()
    metrics = runner.train_and_evaluate(cfg, None, run_dir)
    return run_dir, cfg, metrics


def test_runner_writes_all_metrics_and_tables(smoke_run):
    run_dir, cfg, metrics = smoke_run
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    assert not missing, missing
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    json.dumps(metrics)  # flat and serialisable
    interp = np.mean([metrics[f"case{k}_soh_mape_generated_pct"] for k in range(4)])
    assert metrics["interp_soh_mape_generated_pct"] == pytest.approx(interp)
    assert metrics["num_members"] == 8.0  # the honest normaliser equals the paper's here
    for name in ("per_soc.csv", "per_case.csv", "history.csv", "report.md"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "per_soc.csv") as f:
        rows = list(csv.DictReader(f))
    # 49 unseen (case, SOC) slots, 27 of them in cases 4-7 (+eq89); 2 protocols
    assert len(rows) == 2 * (49 + 27)
    assert {r["variant"] for r in rows} == {"direct", "authors_shift", "eq89"}
    per_feature = [np.mean([float(r[f"gen_mape_U{j}_pct"]) for j in range(1, 22)]) for r in rows]
    np.testing.assert_allclose(per_feature, [float(r["generation_mape_pct"]) for r in rows], rtol=1e-4)
    report = (run_dir / "report.md").read_text()
    assert "| 7 | 5, 10 |" in report and "mean 4-7" in report
    params, meta = checkpoint.load(run_dir)
    assert meta["battery"] == "synthetic" and len(meta["members"]) == 8
    assert meta["cases"]["7"]["base_soc_pct"] == 10.0
    leaves = jax.tree_util.tree_leaves(params)
    assert all(leaf.shape[0] == 8 for leaf in leaves)


def test_generation_errors_per_feature_and_paired():
    measured = np.array([[3.0, 4.0], [3.5, 2.0]])
    generated = np.array([[3.3, 4.0], [3.5, 2.5]])
    e = generation_errors(generated, measured, paired=True)
    # feature 1: |0.3/3| and 0 -> 5 %; feature 2: 0 and |0.5/2| -> 12.5 %
    assert e["gen_mape_U1_pct"] == pytest.approx(5.0)
    assert e["gen_mape_U2_pct"] == pytest.approx(12.5)
    assert e["generation_mape_pct"] == pytest.approx(8.75)
    assert e["generation_mape_feature_std_pct"] == pytest.approx(3.75)
    # unpaired: sorted per feature, so a permutation of the generated rows costs nothing
    assert generation_errors(measured[::-1], measured, paired=False)["generation_mape_pct"] == 0.0
    assert generation_errors(measured[::-1], measured, paired=True)["generation_mape_pct"] > 0.0


def test_generate_roundtrip_and_refusal(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    out = generate(run_dir, 0.30, 0.85, 7, tmp_path / "gen.csv", seed=1)
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["SOC", "SOH", *[f"U{i}" for i in range(1, 22)]]
    assert len(rows) == 8
    values = np.array(rows[1:], float)
    np.testing.assert_allclose(values[:, 0], 0.30)
    np.testing.assert_allclose(values[:, 1], 0.85)
    assert np.all((values[:, 2:] > 2.5) & (values[:, 2:] < 5.0))
    # same seed, same rows
    again = generate(run_dir, 0.30, 0.85, 7, tmp_path / "gen2.csv", seed=1)
    assert again.read_text() == out.read_text()
    with pytest.raises(RunDirError, match="refusing to overwrite"):
        generate(run_dir, 0.30, 0.85, 7, out)
    # extrapolation from case 7 (trained on 5 and 10 %): the authors' shift
    far = generate(run_dir, 0.45, 0.85, 3, tmp_path / "far.csv", case=7)
    near = generate(run_dir, 0.10, 0.85, 3, tmp_path / "near.csv", case=7)
    u_far = np.array(list(csv.reader(open(far)))[1:], float)[:, 2:]
    u_near = np.array(list(csv.reader(open(near)))[1:], float)[:, 2:]
    _, meta = checkpoint.load(run_dir)
    w = meta["cases"]["7"]["shift_weight_v"]
    assert w > 0
    assert np.mean(u_far - u_near) == pytest.approx(0.35 * w * 20, abs=0.05)
    with pytest.raises(ConfigError, match="fraction"):
        generate(run_dir, 30, 0.85, 3, tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="not in this run"):
        generate(run_dir, 0.3, 0.85, 3, tmp_path / "y.csv", case=9)


def test_generate_needs_a_checkpoint(tmp_path):
    with pytest.raises(RunDirError):
        generate(tmp_path, 0.3, 0.9, 2, tmp_path / "g.csv")


def test_lmo_experiment_from_data_dir(tmp_path):
    rows, _ = lfp_layout_rows(n_cells=12, max_soc=85, width_col="Pt")
    write_workbook(tmp_path / "data" / "pulse" / "LMO_10Ah_W_3000.xlsx", {"SOC ALL": rows})
    # same shapes as the smoke run (12 cells, 8 cases), so the compiled program is reused
    cfg = smoke_config(battery="LMO")
    metrics = runner.train_and_evaluate(cfg, tmp_path / "data", tmp_path / "run")
    for key in (
        "case0_soh_mape_generated_pct",
        "case7_soh_mape_generated_pct",
        "case7_soh_mape_generated_pct_eq89",
        "case7_soh_mape_generated_pct_honest",
        "interp_soh_mape_generated_pct",
        "extrap_soh_mape_generated_pct",
    ):
        assert np.isfinite(metrics[key]), key
    _, meta = checkpoint.load(tmp_path / "run")
    assert meta["battery"] == "LMO"
    assert meta["cases"]["7"]["shift_weight_v"] == 0.095


def test_honest_normaliser_adds_members_when_cells_are_held_out():
    data = pulse_synthetic.make_cohort(12, seed=0)
    cfg = smoke_config(test_cell_fraction=0.25, cases="4,7")
    plans = pulse_cases.plan_cases(cfg, data)
    held = ~plans[0].train_rows & np.isin(data.soc_pct, plans[0].train_soc_pct)
    assert len(set(data.cell[held].tolist())) == 3
    # scored rows are the held-out cells only, and no held-out row is trained on
    assert not np.any(plans[0].train_rows & plans[0].eval_rows)
    members = pulse_cases.plan_members(cfg, data, plans)
    assert [m.protocols for m in members if m.case == 4] in (
        [("test_rows", "train")],
        [("test_rows",), ("train",)],
    )
    assert plans[1].t_mean == pytest.approx(np.mean(range(15, 55, 5)) / 7.5)
    assert plans[1].t_logvar == pytest.approx(np.var(range(15, 55, 5)) / np.var([5, 10]))


# ------------------------------------------------------------------- config
def test_config_overrides_and_validation():
    cfg = experiments.load("cvae-pulse").get_config()
    assert type(cfg).family == "cvae"
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate) == (50, 32, 1e-3)
    assert (cfg.model.embed_dim, cfg.model.latent_dim) == (64, 2)
    assert cfg.generation.extrapolation == "authors_shift"
    assert cfg.generation.soh_source == "test_rows"
    assert (cfg.downstream.n_estimators, cfg.downstream.max_depth) == (20, 64)
    new = cfglib.apply_overrides(
        cfg,
        [
            "generation.extrapolation=eq89",
            "generation.soh_source=train",
            "data.cases=0,4",
            "train.ensemble_size=3",
        ],
    )
    assert new.data.cases == (0, 4) and new.train.ensemble_size == 3
    round_trip = cfglib.from_dict(CvaeConfig, json.loads(cfglib.dumps(new)))
    assert round_trip == new
    for bad in (
        "data.cases=9",
        "generation.extrapolation=shift",
        "data.battery=NCA",
        "train.epochs=0",
    ):
        with pytest.raises(ConfigError):
            cfglib.apply_overrides(cfg, [bad])


def test_experiments_are_registered():
    assert {"cvae-pulse", "cvae-synthetic"} <= set(experiments.names())
    doc = experiments.load("cvae-pulse").__doc__
    assert "slbjax run cvae-pulse --set data.battery=NMC2.1" in doc and "4.4 %" in doc
    assert experiments.load("cvae-synthetic").get_config().data.battery == "synthetic"


def test_pulse_experiment_needs_data(tmp_path):
    from slbjax.errors import DataError

    with pytest.raises(DataError, match="NMC_2.1Ah_W_3000.xlsx"):
        cfg = experiments.load("cvae-pulse").get_config(smoke=True)
        runner.train_and_evaluate(cfg, tmp_path, tmp_path / "r")


def test_authors_shift_constants():
    assert pulse_cases.AUTHORS_SHIFT_WEIGHT_V == {
        "NMC2.1": 0.043, "NMC21": 0.04, "LFP": 0.0295, "LMO": 0.095
    }  # fmt: skip


@pytest.mark.skipif(not os.environ.get("SLBJAX_DATA"), reason="SLBJAX_DATA is not set")
@pytest.mark.realdata
def test_cvae_pulse_smoke_on_real_data(tmp_path):
    cfg = experiments.load("cvae-pulse").get_config(smoke=True)
    metrics = runner.train_and_evaluate(cfg, Path(os.environ["SLBJAX_DATA"]), tmp_path / "run")
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    assert not missing, missing
    assert metrics["num_rows"] == 670.0


def test_cli_run_and_generate(tmp_path, capsys):
    from slbjax.cli import main

    run_dir = tmp_path / "run"
    assert main(["run", "cvae-synthetic", "--smoke", "--workdir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(k in metrics for k in REQUIRED_KEYS)
    assert json.loads((run_dir / "config.json").read_text())["experiment"] == "cvae-synthetic"
    out = tmp_path / "gen.csv"
    args = ["generate", "--run", str(run_dir), "--soc", "0.3", "--soh", "0.85", "-n", "4"]
    assert main([*args, "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 5
    capsys.readouterr()
    assert main([*args, "-o", str(out)]) != 0  # refuses to overwrite, no traceback
    assert "refusing to overwrite" in capsys.readouterr().err
