"""The PyTorch baseline of the benchmarks computes what slbjax's IMOE computes.

Random weights everywhere (flax initialises biases and ``w_noise`` to zero, which
would hide a wrong bias mapping), copied into ``scripts/torch_imoe.py``'s module;
outputs, gate weights, the gate itself, the router loss and gradients must agree.
Skipped unless torch (the optional ``bench`` extra) is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import torch_imoe  # noqa: E402

from slbjax.models.imoe import IMOE, batched_apply, gate_weights  # noqa: E402
from slbjax.train.imoe import cv_squared  # noqa: E402

B, F, E, K, L = 6, 12, 5, 2, 50


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    qv = np.cumsum(rng.random((B, 50)) * 0.03, axis=1).astype(np.float32)
    feats = rng.standard_normal((B, F)).astype(np.float32)
    load = rng.standard_normal((B, L, 3)).astype(np.float32)
    target = (2.8 - 0.01 * np.arange(L) + 0.05 * rng.standard_normal((B, L))).astype(np.float32)
    return qv, feats, load, target


def _setup(seed: int = 0):
    model = IMOE(num_experts=E, top_k=K, horizon=L, target_mean=2.7, target_std=0.3)
    qv, feats, load, target = _inputs(seed)
    params = model.init(jax.random.key(seed), qv[0], feats[0], load[0])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree,
        [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)],
    )
    tmodel = torch_imoe.from_flax(model, params, F)
    return model, params, tmodel, (qv, feats, load, target)


def test_forward_matches_flax():
    model, params, tmodel, (qv, feats, load, _) = _setup()
    y_jax, w_jax = batched_apply(model, params, qv, feats, load)
    y_t, w_t = torch_imoe.predict(tmodel, *(torch.from_numpy(x) for x in (qv, feats, load)))
    np.testing.assert_allclose(y_t, np.asarray(y_jax), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(w_t, np.asarray(w_jax), atol=1e-6, rtol=1e-5)


def test_gate_and_router_loss_match():
    logits = np.random.default_rng(3).standard_normal((64, E)).astype(np.float32)
    w_jax = jax.vmap(lambda x: gate_weights(x, K, "authors"))(jnp.asarray(logits))
    tmodel = torch_imoe.TorchIMOE(F, num_experts=E, top_k=K, horizon=L)
    w_t = tmodel.gate(torch.from_numpy(logits))
    np.testing.assert_allclose(w_t.numpy(), np.asarray(w_jax), atol=1e-6)
    sums = w_t.sum(0)
    np.testing.assert_allclose(
        float(torch_imoe.cv_squared(sums)),
        float(cv_squared(jnp.asarray(sums.numpy()), 1e-10)),
        rtol=1e-5,
    )


def test_gradients_match_flax():
    """Backward passes agree too (eval mode: no router noise; the full loss otherwise)."""
    model, params, tmodel, (qv, feats, load, target) = _setup(1)

    def loss(p):
        pred, gates = batched_apply(model, p, qv, feats, load)
        return 0.75 * ((pred - target) ** 2).mean() + 0.25 * cv_squared(gates.sum(0), 1e-10)

    g_jax = torch_imoe.state_dict_from_flax(jax.grad(loss)(params))
    tmodel.eval()
    pred, gates = tmodel(*(torch.from_numpy(x) for x in (qv, feats, load)))
    torch_imoe.loss_fn(pred, gates, torch.from_numpy(target))[0].backward()
    for name, p in tmodel.named_parameters():
        if name == "w_noise":  # only used in training mode
            assert p.grad is None and not g_jax[name].any()
            continue
        # flax has one LSTM bias per gate: torch's two biases both get its gradient.
        ref = g_jax[name.replace("bias_ih", "bias_hh")]
        np.testing.assert_allclose(p.grad.numpy(), ref.numpy(), atol=2e-5, rtol=1e-4, err_msg=name)
