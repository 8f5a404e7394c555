"""The LSTM with the hand-written backward pass against flax's nn.RNN(OptimizedLSTMCell)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slbjax.models.lstm import LSTM


class _Ours(nn.Module):
    reverse: bool

    @nn.compact
    def __call__(self, xs):
        return LSTM(8, reverse=self.reverse, name="OptimizedLSTMCell_0")(xs)


class _Flax(nn.Module):
    reverse: bool

    @nn.compact
    def __call__(self, xs):
        return nn.RNN(nn.OptimizedLSTMCell(8), reverse=self.reverse, keep_order=True)(xs)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_equals_flax_cell_values_and_gradients(reverse):
    xs = jax.random.normal(jax.random.key(0), (6, 11, 3))  # a batch of 6 sequences of 11 steps
    cot = jax.random.normal(jax.random.key(1), (6, 11, 8))
    ours, theirs = _Ours(reverse), _Flax(reverse)
    p = ours.init(jax.random.key(2), xs[0])
    q = theirs.init(jax.random.key(2), xs[0])
    # the same parameter names, shapes and initial values
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(q)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q), strict=True):
        np.testing.assert_array_equal(a, b)

    def loss(module, params, xs):  # a linear functional of the states: every state matters
        return (jax.vmap(lambda x: module.apply(params, x))(xs) * cot).sum()

    np.testing.assert_allclose(jax.vmap(lambda x: ours.apply(p, x))(xs),
                               jax.vmap(lambda x: theirs.apply(p, x))(xs), rtol=1e-6, atol=1e-6)
    g_ours = jax.grad(loss, argnums=(1, 2))(ours, p, xs)
    g_theirs = jax.grad(loss, argnums=(1, 2))(theirs, p, xs)
    for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # the reverse direction depends on later inputs only: the first output on all of them
    dx = jax.grad(lambda x: ours.apply(p, x)[0].sum())(xs[0])
    assert (np.abs(np.asarray(dx)[1:]).sum() > 0) == reverse


def test_lstm_grad_checks_numerically():
    xs = jax.random.normal(jax.random.key(3), (7, 2), jnp.float32)
    m = LSTM(4)
    p = m.init(jax.random.key(4), xs)
    from jax.test_util import check_grads

    f = lambda p, xs: jnp.tanh(m.apply(p, xs)).sum()  # noqa: E731
    with jax.numpy_dtype_promotion("standard"):
        check_grads(f, (p, xs), order=1, modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-2)
