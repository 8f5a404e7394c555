"""iMOE: a noisy top-k mixture of experts feeding a recurrent head.

Written for ONE sample; batch with ``jax.vmap`` (see :func:`slbjax.models.apply.batched_apply`).

* AMDP (router + experts): a linear router on the standardised physics
  features gives one logit per expert; in training, Gaussian noise with a
  learned, input-dependent scale is added (``softplus(logits @ W_noise) + 1e-5``,
  ``W_noise`` [E, E] initialised to zeros); a gate turns logits into weights.
  Each expert is one linear map from the Q-V curve [50] to an L-long trend; the
  trend is the weighted sum of the experts.
* FORNN: an LSTM (bidirectional by default) over [trend, charge current,
  discharge current, temperature] per future cycle, then a linear layer per
  cycle gives the capacity trajectory [L].

Two gates are offered (``gate``):

* ``"topk_softmax"`` — the paper's eq. 5: softmax over the k largest logits,
  exactly k non-zero weights.
* ``"authors"`` — the published code: p = softmax(logits); the top-k entries
  become ``alpha * (exp(p) - 1)``, the others ``alpha * log(1 + p)``; a second
  softmax follows, so every expert keeps some weight.
"""

from __future__ import annotations

from typing import Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from slbjax.models.apply import batched_apply  # noqa: F401  (re-exported: the batching of IMOE)
from slbjax.models.lstm import LSTM

Gate = Literal["authors", "topk_softmax"]
NOISE_EPS = 1e-5


def topk_mask(logits: jax.Array, k: int) -> jax.Array:
    """[E] bool, True at the k largest entries (exactly k, ties broken by index)."""
    _, idx = jax.lax.top_k(logits, k)
    return jnp.zeros(logits.shape, bool).at[idx].set(True)


def gate_weights(logits: jax.Array, k: int, gate: Gate, alpha: float = 10.0) -> jax.Array:
    """Mixture weights [E] from router logits [E]; they sum to 1."""
    mask = topk_mask(logits, k)
    if gate == "topk_softmax":
        return jax.nn.softmax(jnp.where(mask, logits, -jnp.inf))
    if gate == "authors":
        p = jax.nn.softmax(logits)
        boosted = jnp.where(mask, alpha * (jnp.exp(p) - 1.0), alpha * jnp.log1p(p))
        return jax.nn.softmax(boosted)
    raise ValueError(f"unknown gate {gate!r}")


class Router(nn.Module):
    """Noisy top-k router: features [F] -> weights [E]."""

    num_experts: int
    top_k: int
    gate: Gate = "authors"
    gate_alpha: float = 10.0
    noisy: bool = True

    @nn.compact
    def __call__(self, features: jax.Array, train: bool) -> jax.Array:
        logits = nn.Dense(self.num_experts, name="logits")(features)
        if self.noisy:
            w_noise = self.param(
                "w_noise", nn.initializers.zeros, (self.num_experts, self.num_experts)
            )
            if train:
                std = jax.nn.softplus(logits @ w_noise) + NOISE_EPS
                eps = jax.random.normal(self.make_rng("router_noise"), logits.shape)
                logits = logits + eps * std
        return gate_weights(logits, self.top_k, self.gate, self.gate_alpha)


class Experts(nn.Module):
    """E linear experts: Q-V curve [Q] -> trends [E, L]."""

    num_experts: int
    horizon: int

    @nn.compact
    def __call__(self, qv: jax.Array) -> jax.Array:
        out = nn.Dense(self.num_experts * self.horizon, name="experts")(qv)
        return out.reshape(self.num_experts, self.horizon)


class RecurrentHead(nn.Module):
    """FORNN: sequence [L, D] -> capacity trajectory [L]."""

    hidden: int = 64
    bidirectional: bool = True

    @nn.compact
    def __call__(self, seq: jax.Array) -> jax.Array:
        # parameter names as flax's nn.RNN(nn.OptimizedLSTMCell) gives them (see slbjax.models.lstm)
        h = LSTM(self.hidden, name="OptimizedLSTMCell_0")(seq)
        if self.bidirectional:
            h = jnp.concatenate([h, LSTM(self.hidden, reverse=True, name="OptimizedLSTMCell_1")(seq)], -1)
        return nn.Dense(1, name="out")(h)[:, 0]


class IMOE(nn.Module):
    """The full model for one sample.

    Attributes:
      num_experts: E.
      top_k: k experts chosen per sample.
      horizon: L future cycles predicted.
      gate: ``"authors"`` or ``"topk_softmax"`` (see module docstring).
      hidden: LSTM units per direction.
      bidirectional: bidirectional LSTM as in the published code.
      router: ``"moe"`` (noisy top-k mixture) or ``"linear"`` (one linear map
        from the Q-V curve to the trend: the iMOE-linear ablation).
      use_load: feed the future load to the head (False: the iMOE-woFO ablation).
      target_mean, target_std: the output is ``target_mean + target_std * net``;
        fitted on training targets (1 and 0 reproduce the published code).
    """

    num_experts: int = 5
    top_k: int = 2
    horizon: int = 50
    gate: Gate = "authors"
    gate_alpha: float = 10.0
    hidden: int = 64
    bidirectional: bool = True
    router: Literal["moe", "linear"] = "moe"
    use_load: bool = True
    target_mean: float = 0.0
    target_std: float = 1.0

    @nn.compact
    def __call__(
        self, qv: jax.Array, features: jax.Array, load: jax.Array, train: bool = False,
        expert_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Predicts one trajectory.

        Args:
          qv: [Q] processed Q-V curve (Ah).
          features: [F] standardised physics features.
          load: [L, 3] future charge current, discharge current, temperature.
          train: adds router noise (needs the ``router_noise`` rng).
          expert_mask: optional [E] 0/1: the router's weights are multiplied by
            it and renormalised to sum 1 (expert knock-out in
            :mod:`slbjax.interpret`); ``None`` leaves the model as trained.

        Returns:
          (trajectory [L] in Ah, router weights [E]; all ones/E... for ``router="linear"``
          the weights are a [1] array of ones).  The trend fed to the head
          (the AMDP embedding, [L]) is sown as ``intermediates/trend``.
        """
        chex.assert_rank([qv, features, load], [1, 1, 2])
        chex.assert_shape(load, (self.horizon, 3))
        if self.router == "moe":
            weights = Router(self.num_experts, self.top_k, self.gate, self.gate_alpha, name="router")(
                features, train
            )
            if expert_mask is not None:
                kept = weights * expert_mask
                weights = kept / kept.sum()
            trends = Experts(self.num_experts, self.horizon, name="experts")(qv)
            trend = weights @ trends
        else:
            weights = jnp.ones((1,), qv.dtype)
            trend = nn.Dense(self.horizon, name="linear_trend")(qv)
        self.sow("intermediates", "trend", trend)
        parts = [trend[:, None], load] if self.use_load else [trend[:, None]]
        out = RecurrentHead(self.hidden, self.bidirectional, name="head")(jnp.concatenate(parts, 1))
        return self.target_mean + self.target_std * out, weights
