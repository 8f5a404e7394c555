"""Trajectory models (iMOE and the baselines), driven by one list; baseline specifics; history baselines.

The tests parametrised over :data:`MODELS` hold for every model with the
``apply(params, qv, features, load, train=...) -> (trajectory [L], weights [E])``
call: shapes under vmap, weights that sum to one, vmap equal to a loop,
randomness in training only, and a tiny fit.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from slbjax.models.baselines import (
    HistoryMLP,
    Informer,
    PatchTST,
    batched_apply,
    history_windows,
    poly_forecast,
    prob_sparse_attention,
)
from slbjax.models.imoe import IMOE

B, Q, F, L = 8, 50, 7, 12
# Narrower than the authors' 64 so the tests stay fast; the structure is the same.
SMALL = dict(horizon=L, d_model=16, d_ff=16)
MODELS = {
    "imoe": lambda **kw: IMOE(num_experts=5, top_k=2, horizon=L, hidden=8, **kw),
    "patchtst": lambda **kw: PatchTST(**SMALL, **kw),
    "informer": lambda **kw: Informer(**SMALL, **kw),
}
BASELINES = ("patchtst", "informer")


def _target(qv: np.ndarray) -> np.ndarray:
    """[B, L] capacity that depends on the end of the Q-V curve and fades linearly."""
    return (1.0 + 2.0 * qv[:, -1:]) - 0.01 * np.arange(L, dtype=np.float32)[None, :]


def key(seed: int) -> jax.Array:
    """Typed key; "rbg" only because its random bits compile several times faster on CPU."""
    return jax.random.key(seed, impl="rbg")


def _inputs(m: int = B, seed: int = 0):
    rng = np.random.default_rng(seed)
    qv = np.cumsum(rng.random((m, Q), dtype=np.float32) * 0.04, axis=1)
    feats = rng.standard_normal((m, F), dtype=np.float32)
    load = rng.standard_normal((m, L, 3), dtype=np.float32)
    return qv, feats, load


class Compiled:
    """A model, its parameters and its jitted batched eval / train applies."""

    def __init__(self, model, seed: int = 0):
        qv, feats, load = _inputs(1)
        self.model = model
        self.params = jax.jit(model.init)(key(seed), qv[0], feats[0], load[0])
        self.eval = jax.jit(lambda p, *x: batched_apply(model, p, *x))
        self.train = jax.jit(lambda p, *x, rng: batched_apply(model, p, *x, train=True, rng=rng))
        self.one = jax.jit(lambda p, *x: model.apply(p, *x))


@functools.cache
def compiled(name: str) -> Compiled:
    """Compiled once per model and shared by the tests below."""
    target = _target(_inputs()[0])  # output normalisers fitted as a runner would
    return Compiled(MODELS[name](target_mean=float(target.mean()), target_std=float(target.std())))


@pytest.fixture(params=list(MODELS))
def name(request) -> str:
    return request.param


def test_shapes_under_vmap_and_weights_sum_to_one(name):
    net, x = compiled(name), _inputs()
    experts = 5 if name == "imoe" else 1  # a baseline is one "expert" of weight 1
    for y, w in (net.eval(net.params, *x), net.train(net.params, *x, rng=key(1))):
        assert y.shape == (B, L) and w.shape == (B, experts)
        np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-6)
        assert bool((w >= 0).all()) and bool(jnp.isfinite(y).all())


@pytest.mark.parametrize("name", BASELINES)
def test_authors_settings_flatten_to_25_by_64(name):
    x = [a[0] for a in _inputs(1)]
    model = {"patchtst": PatchTST, "informer": Informer}[name](horizon=L)  # the authors' defaults
    params = jax.eval_shape(model.init, key(0), *x)["params"]
    assert params["head"]["out"]["kernel"].shape == (25 * 64, L)  # the authors' Linear(1600, L)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PatchTST(**SMALL, positional=True, use_load=True),
        lambda: Informer(**SMALL, positional=True, use_load=True),
        lambda: Informer(**SMALL, attention="full", distil=False),
    ],
    ids=["patchtst-pos-load", "informer-pos-load", "informer-full-nodistil"],
)
def test_options_trace_with_the_right_shapes(make):
    model, x = make(), [a[0] for a in _inputs(1)]
    params = jax.eval_shape(model.init, key(0), *x)
    rngs = {"dropout": key(1), "key_sampling": key(2)}
    y, w = jax.eval_shape(lambda p: model.apply(p, *x, train=True, rngs=rngs), params)
    assert y.shape == (L,) and w.shape == (1,)
    n_tokens = 50 if isinstance(model, Informer) and not model.distil else 25
    n_in = n_tokens * 16 + (L * 3 if model.use_load else 0)
    assert params["params"]["head"]["out"]["kernel"].shape == (n_in, L)


def test_vmapped_equals_per_sample_loop(name):
    net, x = compiled(name), _inputs(seed=3)
    yb, _ = net.eval(net.params, *x)
    for i in range(B):
        yi, _ = net.one(net.params, *(a[i] for a in x))
        np.testing.assert_allclose(np.asarray(yb[i]), np.asarray(yi), rtol=1e-5, atol=1e-6)


def test_randomness_only_in_training(name):
    """Dropout (baselines) and router noise (iMOE) act in training only."""
    net, x = compiled(name), _inputs()
    e1, e2 = net.eval(net.params, *x)[0], net.eval(net.params, *x)[0]
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    t1, t1b = net.train(net.params, *x, rng=key(1))[0], net.train(net.params, *x, rng=key(1))[0]
    t2 = net.train(net.params, *x, rng=key(2))[0]
    np.testing.assert_array_equal(np.asarray(t1), np.asarray(t1b))
    assert not np.allclose(np.asarray(t1), np.asarray(t2))
    assert not np.allclose(np.asarray(t1), np.asarray(e1))


def test_prob_sparse_samples_keys_only_with_a_key():
    # The Informer passes a key only in training; its eval apply gets no rngs at all
    # (flax would raise InvalidRngError on make_rng), so evaluation cannot sample.
    q, k, v = np.random.default_rng(2).standard_normal((3, 50, 2, 4), dtype=np.float32)
    attend = jax.jit(functools.partial(prob_sparse_attention, factor=1))
    np.testing.assert_array_equal(np.asarray(attend(q, k, v)), np.asarray(attend(q, k, v)))
    a, b = np.asarray(attend(q, k, v, rng=key(1))), np.asarray(attend(q, k, v, rng=key(2)))
    assert not np.allclose(a, b)


def test_prob_sparse_with_every_query_active_is_full_attention():
    q, k, v = np.random.default_rng(0).standard_normal((3, 9, 2, 4), dtype=np.float32)
    scores = np.einsum("qhd,khd->hqk", q, k) / 2.0
    attn = np.exp(scores - scores.max(-1, keepdims=True))
    full = np.einsum("hqk,khd->qhd", attn / attn.sum(-1, keepdims=True), v)
    attend = jax.jit(functools.partial(prob_sparse_attention, factor=10))  # 10*ceil(ln 9) >= 9
    for rng in (None, key(1)):
        out = attend(q, k, v, rng=rng)
        np.testing.assert_allclose(np.asarray(out), np.asarray(full), rtol=1e-5, atol=1e-6)


def test_prob_sparse_lazy_queries_get_the_mean_value():
    q, k, v = np.random.default_rng(3).standard_normal((3, 50, 2, 4), dtype=np.float32)
    out = np.asarray(jax.jit(prob_sparse_attention, static_argnames="factor")(q, k, v, factor=1))
    lazy = np.isclose(out, v.mean(0)[None], atol=1e-6).all(-1)  # [L, H]; ceil(ln 50) = 4 active
    np.testing.assert_array_equal(lazy.sum(0), 50 - math.ceil(math.log(50)))


def _fit(apply, params, data, steps: int = 300, lr: float = 1e-3):
    """``steps`` full-batch Adam steps on the MSE of ``apply(params, *inputs, rng)``."""
    tx = optax.adam(lr)

    def step(carry, rng):
        p, s = carry
        g = jax.grad(lambda p: jnp.mean((apply(p, *data[:-1], rng) - data[-1]) ** 2))(p)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts and floats
            u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    run = jax.jit(lambda p, keys: jax.lax.scan(step, (p, tx.init(p)), keys)[0][0])
    return run(params, jax.random.split(key(7), steps))


def test_tiny_fit_reduces_mse(name):
    # Fitted through the deterministic (eval) path: with dropout 0.2 at width 16
    # the eval error stalls at the train/eval mismatch, and dropout is tested above.
    net, x = compiled(name), _inputs()
    target = _target(x[0])

    def mse(p):
        return float(jnp.mean((net.eval(p, *x)[0] - target) ** 2))

    def apply(p, *inputs_and_rng):
        return net.eval(p, *inputs_and_rng[:-1])[0]

    before = mse(net.params)
    after = mse(_fit(apply, net.params, (*x, target)))
    assert after < 0.05 * before, (before, after)


def test_history_mlp_shapes_dropout_and_fit():
    rng = np.random.default_rng(0)
    h, horizon = 10, 20
    series = 2.0 - 0.002 * np.arange(60)[None, :] * (1 + rng.random((8, 1)))  # 8 fading cells
    pairs = [history_windows(s, h, horizon, step=5) for s in series]
    past = np.concatenate([p[0] for p in pairs]).astype(np.float32)
    future = np.concatenate([p[1] for p in pairs]).astype(np.float32)
    assert past.shape == (8 * 7, h) and future.shape == (8 * 7, horizon)
    model = HistoryMLP(
        horizon, hidden=(32,), target_mean=float(past.mean()), target_std=float(past.std())
    )
    params = jax.jit(model.init)(key(0), past[0])
    predict = jax.jit(jax.vmap(model.apply, (None, 0)))

    @jax.jit
    def train(p, x, rng):
        keys = jax.random.split(rng, x.shape[0])
        return jax.vmap(lambda xi, k: model.apply(p, xi, train=True, rngs={"dropout": k}))(x, keys)

    y = predict(params, past)
    assert y.shape == future.shape
    np.testing.assert_array_equal(np.asarray(y), np.asarray(predict(params, past)))
    np.testing.assert_allclose(
        np.asarray(y[3]), np.asarray(model.apply(params, past[3])), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(
        np.asarray(train(params, past, key(1))), np.asarray(train(params, past, key(2)))
    )

    def mse(p):
        return float(jnp.mean((predict(p, past) - future) ** 2))

    before = mse(params)
    after = mse(_fit(train, params, (past, future)))
    assert after < 0.05 * before, (before, after)


def test_history_windows_match_slicing():
    c = np.arange(20.0)
    past, future = history_windows(c, 5, 3, step=2)
    assert past.shape == (7, 5) and future.shape == (7, 3)
    np.testing.assert_array_equal(past[2], c[4:9])
    np.testing.assert_array_equal(future[2], c[9:12])
    assert history_windows(c, 15, 10)[0].shape == (0, 15)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_poly_forecast_is_exact_on_a_polynomial(degree):
    coef = np.array([2.5, -3e-3, 4e-5, -2e-7])[: degree + 1]
    cycles = np.arange(300.0, 400.0)  # the offset of the window does not matter
    cap = np.polynomial.polynomial.polyval(cycles, coef)
    pred = poly_forecast(cap[:50], 50, degree)
    np.testing.assert_allclose(pred, cap[50:], rtol=1e-9, atol=1e-9)


def test_poly_forecast_is_vectorised_and_matches_polyfit():
    rng = np.random.default_rng(1)
    hist = 2.0 + 0.01 * rng.standard_normal((4, 3, 50))
    pred = poly_forecast(hist, 20, 3)
    assert pred.shape == (4, 3, 20)
    x = np.arange(70.0)
    for idx in np.ndindex(4, 3):
        fit = np.polynomial.polynomial.Polynomial.fit(x[:50], hist[idx], 3)
        np.testing.assert_allclose(pred[idx], fit(x[50:]), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError):
        poly_forecast(hist[..., :3], 5, 3)
