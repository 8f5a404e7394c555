"""Batching one-sample trajectory models with ``jax.vmap``.

Every trajectory model in slbjax (iMOE and the baselines) is written for one
sample with the call ``model.apply(params, qv, features, load, train=...)``
returning ``(trajectory [L], weights [E])``.  :func:`batched_apply` is the one
way they are run on a batch.
"""

from __future__ import annotations

import flax.linen as nn
import jax

RNG_STREAMS = ("router_noise", "dropout", "key_sampling")
"""Named rng streams a model may draw from in training (each sample its own keys)."""


def batched_apply(model: nn.Module, params, qv, features, load, *, train: bool = False, rng=None):
    """Applies a one-sample model to a batch.

    Args:
      qv: [B, Q]; features: [B, F]; load: [B, L, 3].
      train: training mode (noise, dropout); then ``rng`` (a typed key) is
        required and every sample gets its own key for each stream of
        :data:`RNG_STREAMS`.

    Returns:
      (trajectories [B, L], weights [B, E]).
    """
    if not train:
        return jax.vmap(lambda q, f, u: model.apply(params, q, f, u))(qv, features, load)

    def one(q, f, u, key):
        rngs = {name: jax.random.fold_in(key, i) for i, name in enumerate(RNG_STREAMS)}
        return model.apply(params, q, f, u, train=True, rngs=rngs)

    return jax.vmap(one)(qv, features, load, jax.random.split(rng, qv.shape[0]))
