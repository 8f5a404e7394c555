"""The second-life networks: arrival features -> log life and trajectory shape, and
single-cycle features -> state of health."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class LifeMLP(nn.Module):
    """MLP with two heads, for one standardised feature vector ``x`` [F].

    Returns ``(z, shares)``: ``z`` the standardised scalar target (the log
    remaining life; the SOH for the estimator), and ``shares`` [levels],
    non-decreasing and ending at 1: the first-passage time of each capacity
    level as a share of the life (a softmax of increments, accumulated), so
    every predicted trajectory falls monotonically.  ``levels = 0``: no shape
    head (``shares`` is empty), the network of the SOH estimator.

    The last hidden layer is sown as ``intermediates/hidden``: the cell's
    representation that :mod:`slbjax.evaluate.clusters` clusters.
    """

    hidden: tuple[int, ...] = (64, 64)
    levels: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width)(h))
        self.sow("intermediates", "hidden", h)
        z = nn.Dense(1)(h)[0]
        if not self.levels:
            return z, jnp.zeros((0,), z.dtype)
        shares = jnp.cumsum(jax.nn.softmax(nn.Dense(self.levels)(h)))
        return z, shares
