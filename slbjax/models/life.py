"""The second-life life network: arrival features -> log life and trajectory shape."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class LifeMLP(nn.Module):
    """MLP with two heads, for one standardised feature vector ``x`` [F].

    Returns ``(z, shares)``: ``z`` the standardised log remaining life, and
    ``shares`` [levels], non-decreasing and ending at 1: the first-passage time
    of each capacity level as a share of the life (a softmax of increments,
    accumulated), so every predicted trajectory falls monotonically.
    """

    hidden: tuple[int, ...] = (64, 64)
    levels: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width)(h))
        z = nn.Dense(1)(h)[0]
        shares = jnp.cumsum(jax.nn.softmax(nn.Dense(self.levels)(h)))
        return z, shares
