"""An LSTM over a whole sequence whose backward pass does the weight gradients in one matmul.

Differentiating a ``lax.scan`` of an LSTM cell accumulates the gradient of
the recurrent and input kernels inside the reversed loop: two [B, H] x [H, 4H]
sized products per step (one for the state, one for the kernel).  Only the
first is recurrent.  :func:`lstm` saves the gates in the forward scan and, in
its backward scan, carries only the state gradients; the kernel and bias
gradients are then one product over all steps, as cuDNN and PyTorch's CPU
LSTM do.  The arithmetic of the forward pass is that of flax's
``OptimizedLSTMCell`` (gates i, f, g, o; ``c = f c + i g``, ``h = o tanh c``,
zero initial state), and :class:`LSTM` creates its parameters under the same
names, shapes and initialisers, so checkpoints of either load in the other.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import DenseParams


def _scan(wi, wh, b, xs, reverse, save: bool):
    """The forward scan; ``save``: also the cell states and activated gates of every step."""
    hidden = wh.shape[0]

    def step(carry, x):
        h, c = carry
        z = x @ wi + h @ wh + b  # in the loop: a [L, 4H] input projection scanned over is slower
        i, f, o = (jax.nn.sigmoid(z[k * hidden:(k + 1) * hidden]) for k in (0, 1, 3))
        g = jnp.tanh(z[2 * hidden:3 * hidden])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), ((h, c, i, f, g, o) if save else h)

    zero = jnp.zeros((hidden,), xs.dtype)
    return jax.lax.scan(step, (zero, zero), xs, reverse=reverse)[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm(wi: jax.Array, wh: jax.Array, b: jax.Array, xs: jax.Array, reverse: bool = False) -> jax.Array:
    """Hidden states [L, H] of one LSTM direction over ``xs`` [L, D].

    Args:
      wi: [D, 4H] input kernel, gates in the order i, f, g, o.
      wh: [H, 4H] recurrent kernel.
      b: [4H] bias.
      xs: [L, D] one sequence (vmap for a batch).
      reverse: run from the last step to the first (outputs stay in input order).
    """
    return _scan(wi, wh, b, xs, reverse, save=False)


def _lstm_fwd(wi, wh, b, xs, reverse):
    hs, cs, *gates = _scan(wi, wh, b, xs, reverse, save=True)
    return hs, (wi, wh, xs, hs, cs, gates)


def _previous(a: jax.Array, reverse: bool) -> jax.Array:
    """The state each step started from: the neighbour in processing order, zeros first."""
    zero = jnp.zeros_like(a[:1])
    return jnp.concatenate([a[1:], zero]) if reverse else jnp.concatenate([zero, a[:-1]])


def _lstm_bwd(reverse, res, dhs):
    wi, wh, xs, hs, cs, gates = res
    hidden = wh.shape[0]

    def step(carry, t):
        dh_next, dc_next = carry
        dh_t, (i, f, g, o), c_t, c_prev_t = t
        tc = jnp.tanh(c_t)
        dh = dh_t + dh_next
        dc = dc_next + dh * o * (1.0 - tc * tc)
        dz = (dc * g * i * (1.0 - i), dc * c_prev_t * f * (1.0 - f), dc * i * (1.0 - g * g),
              dh * tc * o * (1.0 - o))
        return (jnp.concatenate(dz) @ wh.T, dc * f), dz

    zero = jnp.zeros((hidden,), dhs.dtype)
    # backwards through the forward order: its last step first
    _, dzs = jax.lax.scan(step, (zero, zero), (dhs, gates, cs, _previous(cs, reverse)),
                         reverse=not reverse)
    dz = jnp.concatenate(dzs, axis=-1)  # [L, 4H]
    return xs.T @ dz, _previous(hs, reverse).T @ dz, dz.sum(0), dz @ wi.T  # wi, wh, b, xs


lstm.defvjp(_lstm_fwd, _lstm_bwd)


class LSTM(nn.Module):
    """One LSTM direction over a sequence [L, D] -> [L, H], parameters as flax's
    ``OptimizedLSTMCell`` names them (``ii``/``if``/``ig``/``io`` input kernels,
    ``hi``/``hf``/``hg``/``ho`` recurrent kernels with the biases)."""

    features: int
    reverse: bool = False

    @nn.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        h0 = jnp.zeros((self.features,), xs.dtype)
        ins, recs = [], []
        for gate in "ifgo":
            ins.append(DenseParams(self.features, use_bias=False,
                                   kernel_init=nn.initializers.lecun_normal(),
                                   bias_init=nn.initializers.zeros_init(), name=f"i{gate}")(xs[0]))
            recs.append(DenseParams(self.features, use_bias=True,
                                    kernel_init=nn.initializers.orthogonal(),
                                    bias_init=nn.initializers.zeros_init(), name=f"h{gate}")(h0))
        wi = jnp.concatenate([k for k, _ in ins], axis=-1)
        wh = jnp.concatenate([k for k, _ in recs], axis=-1)
        b = jnp.concatenate([bias for _, bias in recs], axis=-1)
        return lstm(wi, wh, b, xs, self.reverse)
