"""iMOE model and training: router invariants, vmap vs loop, a tiny fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slbjax.models.imoe import IMOE, batched_apply, gate_weights, topk_mask
from slbjax.train.imoe import Batch, cv_squared, fit, init_params, predict

E, K, L, F = 5, 2, 12, 7


def _batch(m: int, seed: int = 0, horizon: int = L) -> Batch:
    rng = np.random.default_rng(seed)
    qv = np.cumsum(rng.random((m, 50), dtype=np.float32) * 0.04, axis=1)
    feats = rng.standard_normal((m, F), dtype=np.float32)
    load = np.zeros((m, horizon, 3), np.float32)  # a standardised constant load
    # capacity that depends on the Q-V end value, fading linearly
    target = (2.5 + qv[:, -1:]) - 0.002 * np.arange(horizon, dtype=np.float32)[None, :]
    return Batch(qv, feats, load, target.astype(np.float32))


@pytest.mark.parametrize("gate", ["authors", "topk_softmax"])
def test_gate_weights_sum_to_one(gate):
    logits = jax.random.normal(jax.random.key(1), (64, E))
    w = jax.vmap(lambda x: gate_weights(x, K, gate))(logits)
    np.testing.assert_allclose(np.asarray(w.sum(-1)), 1.0, rtol=1e-6)
    assert bool((w >= 0).all())


def test_topk_softmax_has_exactly_k_nonzero_on_the_largest_logits():
    logits = jax.random.normal(jax.random.key(2), (64, E))
    w = np.asarray(jax.vmap(lambda x: gate_weights(x, K, "topk_softmax"))(logits))
    assert ((w > 0).sum(-1) == K).all()
    top = np.argsort(-np.asarray(logits), axis=-1)[:, :K]
    assert np.all(np.take_along_axis(w, top, -1) > 0)


def test_topk_mask_breaks_ties_to_exactly_k():
    assert int(topk_mask(jnp.zeros(E), K).sum()) == K


def test_authors_gate_keeps_every_expert_and_favours_top_k():
    logits = jnp.array([3.0, -1.0, 0.5, 2.0, -2.0])
    w = np.asarray(gate_weights(logits, K, "authors"))
    assert (w > 0).all()
    assert set(np.argsort(-w)[:K]) == {0, 3}


def _model(**kw) -> IMOE:
    return IMOE(num_experts=E, top_k=K, horizon=L, hidden=8, **kw)


def test_router_noise_only_in_training():
    model = _model()
    b = _batch(8)
    params = init_params(model, jax.random.key(0), b)
    # make the (input-dependent) noise scale clearly non-zero: W_noise starts at zero
    router = {**params["params"]["router"], "w_noise": jnp.full((E, E), 0.5)}
    params = {"params": {**params["params"], "router": router}}
    y1, w1 = batched_apply(model, params, b.qv, b.features, b.load)
    y2, w2 = batched_apply(model, params, b.qv, b.features, b.load)
    np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))
    _, wt1 = batched_apply(model, params, b.qv, b.features, b.load, train=True, rng=jax.random.key(1))
    _, wt2 = batched_apply(model, params, b.qv, b.features, b.load, train=True, rng=jax.random.key(2))
    assert not np.allclose(np.asarray(wt1), np.asarray(wt2))
    assert not np.allclose(np.asarray(wt1), np.asarray(w1))


def test_vmapped_model_equals_per_sample_loop():
    model = _model(gate="topk_softmax")
    b = _batch(6)
    params = init_params(model, jax.random.key(3), b)
    yb, wb = batched_apply(model, params, b.qv, b.features, b.load)
    for i in range(6):
        yi, wi = model.apply(params, b.qv[i], b.features[i], b.load[i])
        np.testing.assert_allclose(np.asarray(yb[i]), np.asarray(yi), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(wb[i]), np.asarray(wi), rtol=1e-5, atol=1e-7)


def test_shapes_and_ablations():
    b = _batch(3)
    for kw, e in [({}, E), ({"router": "linear"}, 1), ({"use_load": False}, E),
                  ({"bidirectional": False}, E)]:
        model = _model(**kw)
        params = init_params(model, jax.random.key(0), b)
        y, w = batched_apply(model, params, b.qv, b.features, b.load)
        assert y.shape == (3, L) and w.shape == (3, e)


def test_cv_squared_matches_unbiased_definition():
    x = jnp.array([1.0, 2.0, 3.0, 6.0])
    expected = np.var([1, 2, 3, 6], ddof=1) / np.mean([1, 2, 3, 6]) ** 2
    assert float(cv_squared(x, 0.0)) == pytest.approx(expected, rel=1e-6)
    assert float(cv_squared(jnp.ones(1), 1e-10)) == 0.0


def test_tiny_fit_learns_and_is_reproducible():
    train, val = _batch(96, seed=0), _batch(32, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    kw = dict(seed=0, epochs=60, batch_size=16, learning_rate=1e-2, patience=60, chunk=20, log=lambda s: None)
    r1 = fit(model, train, val, **kw)
    r2 = fit(model, train, val, **kw)
    assert r1.history["val_mse"][-1] < 0.5 * r1.history["val_mse"][0]
    assert r1.best_val == min(r1.history["val_mse"])
    assert r1.history == r2.history  # same config + seed, same numbers
    p1, _ = predict(model, r1.params, val)
    p2, _ = predict(model, r2.params, val)
    np.testing.assert_array_equal(p1, p2)


def test_early_stopping_stops_and_keeps_best():
    train, val = _batch(32, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    # a huge learning rate makes validation error jump around; patience 3 must stop it early
    r = fit(model, train, val, seed=0, epochs=200, batch_size=16, learning_rate=0.3, patience=3,
            chunk=5, log=lambda s: None)
    assert r.epochs_run < 200
    assert r.epochs_run == r.best_epoch + 3
    assert r.best_val == pytest.approx(min(r.history["val_mse"]))
    pb, _ = predict(model, r.params, val)
    assert float(np.mean((pb - val.target) ** 2)) == pytest.approx(r.best_val, rel=1e-4)


def test_vmapped_members_equal_separate_trainings():
    from slbjax.train.imoe import fit_members

    train, val = _batch(48, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    kw = dict(epochs=6, batch_size=16, learning_rate=1e-2, patience=2, chunk=3, log=lambda s: None)
    members = fit_members(model, train, val, seeds=[3, 7], **kw)
    for seed, m in zip([3, 7], members, strict=True):
        alone = fit(model, train, val, seed=seed, **kw)
        assert m.epochs_run == alone.epochs_run and m.best_epoch == alone.best_epoch
        np.testing.assert_allclose(m.history["val_mse"], alone.history["val_mse"], rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(m.params), jax.tree_util.tree_leaves(alone.params),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert members[0].history["val_mse"] != members[1].history["val_mse"]


def test_stopped_members_leave_the_program_and_the_rest_match_separate_runs():
    from slbjax.train.imoe import fit_members

    train, val = _batch(48, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    kw = dict(epochs=10, batch_size=16, patience=2, chunk=2)
    # learning rate 0: no improvement after the first epoch, so these members stop at epoch 3
    lrs = [1e-2, 0.0, 1e-2, 0.0]
    lines = []
    members = fit_members(model, train, val, seeds=[0, 1, 2, 3], learning_rate=lrs, log=lines.append, **kw)
    assert any("continuing with the 2 active member(s)" in line for line in lines)
    assert [m.epochs_run for m in members][1::2] == [3, 3]
    for seed, (lr, m) in enumerate(zip(lrs, members, strict=True)):
        alone = fit(model, train, val, seed=seed, learning_rate=lr, log=lambda s: None, **kw)
        assert (m.epochs_run, m.best_epoch) == (alone.epochs_run, alone.best_epoch)
        np.testing.assert_allclose(m.history["val_mse"], alone.history["val_mse"], rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(m.params), jax.tree_util.tree_leaves(alone.params),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_members_with_different_learning_rates_and_loss_weights_match_separate_runs():
    from slbjax.train.imoe import LossWeights, fit_members

    train, val = _batch(48, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    kw = dict(epochs=4, batch_size=16, patience=10, chunk=2, log=lambda s: None)
    lrs, ws = [1e-2, 1e-3], [LossWeights(0.75, 0.25), LossWeights(1.0, 0.5)]
    members = fit_members(model, train, val, seeds=[0, 0], learning_rate=lrs, weights=ws, **kw)
    for lr, w, m in zip(lrs, ws, members, strict=True):
        alone = fit(model, train, val, seed=0, learning_rate=lr, weights=w, **kw)
        np.testing.assert_allclose(m.history["train_loss"], alone.history["train_loss"], rtol=1e-5)
    assert members[0].history["val_mse"] != members[1].history["val_mse"]


def test_member_init_factorises_one_matrix_at_a_time():
    """The LSTM's orthogonal init is a QR factorisation; vmapped over members it would be a
    batched one, whose CPU kernel can wait forever inside XLA's thread pool on a 2-core
    machine.  The core initialises members one after the other: every QR in the init
    program factorises a single matrix."""
    import re

    from slbjax.train import loop
    from slbjax.train.imoe import LossWeights, members, task

    train, val = _batch(48, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    t = task(model, train.size, 16, 1e-10)
    m = members([0, 1, 2], 1e-3, [LossWeights()] * 3)
    data = loop.Data(train, val)
    text = loop._init_program(t).lower(data, m.init_keys, m.rngs, m.learning_rate, m.hparams).as_text()
    qr_operands = re.findall(r"custom_call @lapack_sgeqrf_ffi\((%[\w#]+)\)[^\n]*: \(tensor<([0-9x]+)xf32>", text)
    assert qr_operands, "expected the orthogonal init's QR in the init program"
    assert all(shape.count("x") == 1 for _, shape in qr_operands), qr_operands


def test_selection_on_the_validation_loss_changes_only_the_selection():
    """``select_on="loss"`` (the published code's rule) trains exactly as ``"mse"`` does; only the
    validation score, hence the best epoch and the stop, differ.  The score is the mean over
    validation minibatches of the weighted MSE + CV^2 of the minibatch's gate sums."""
    from slbjax.models.apply import batched_apply
    from slbjax.train.imoe import LossWeights, cv_squared, eval_loss, fit_members

    # the shapes of test_vmapped_members_equal_separate_trainings: its program is reused
    train, val = _batch(48, seed=0), _batch(16, seed=1)
    model = _model(target_mean=float(train.target.mean()), target_std=float(train.target.std()))
    w = LossWeights(1.0, 0.5)
    kw = dict(seeds=[0], epochs=6, batch_size=16, learning_rate=1e-2, patience=2, chunk=3,
              weights=w, log=lambda s: None)
    by_mse = fit_members(model, train, val, **kw)[0]
    by_loss = fit_members(model, train, val, select_on="loss", **kw)[0]
    n = min(by_mse.epochs_run, by_loss.epochs_run)
    assert by_mse.history["train_loss"][:n] == by_loss.history["train_loss"][:n]
    assert "val_loss" in by_loss.history and "val_mse" not in by_loss.history
    # the returned parameters are the best epoch's, and their score is the recorded best
    assert by_loss.best_val == pytest.approx(min(by_loss.history["val_loss"]))
    assert float(eval_loss(by_loss.params, model, val, 16, w)) == pytest.approx(by_loss.best_val, rel=1e-5)
    # on 20 windows: minibatches of 16 and 4, weighted equally
    val20 = _batch(20, seed=2)
    scores = []
    for start in (0, 16):
        part = val20.take(slice(start, start + 16))
        pred, gates = batched_apply(model, by_loss.params, part.qv, part.features, part.load)
        scores.append(float(((pred - part.target) ** 2).mean())
                      + 0.5 * float(cv_squared(gates.sum(0), 1e-10)))
    assert float(eval_loss(by_loss.params, model, val20, 16, w)) == pytest.approx(np.mean(scores), rel=1e-5)
    with pytest.raises(ValueError, match="select_on"):
        fit_members(model, train, val, select_on="test", **kw)


def test_authors_protocol_changes_exactly_the_keys_it_names():
    """imoe-ul-authors is imoe-ul with the published code's training choices, nothing else."""
    from slbjax.experiments import imoe_ul, imoe_ul_authors

    from slbjax.config import describe

    for smoke in (False, True):
        ours = {k: v for k, _, v in describe(imoe_ul.get_config(smoke))}
        theirs = {k: v for k, _, v in describe(imoe_ul_authors.get_config(smoke))}
        assert ours.keys() == theirs.keys()
        changed = {k for k in ours if ours[k] != theirs[k]}
        assert changed == set(imoe_ul_authors.AUTHORS)
        assert {k: theirs[k] for k in changed} == {k: str(v).lower() if isinstance(v, bool) else str(v)
                                                   for k, v in imoe_ul_authors.AUTHORS.items()}
