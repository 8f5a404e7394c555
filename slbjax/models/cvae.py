"""Conditional VAE with cross-attention for pulse-voltage features (Tao et al. 2024).

Written for ONE sample (features ``x`` [F], condition ``c`` = (SOC, SOH) [2],
both min-max normalised); batch with ``jax.vmap``.  The layout follows the
authors' published model:

* condition embedding: ``Dense(embed_dim, relu)`` of (SOC, SOH), shared by the
  encoder and the decoder;
* encoder: ``Dense(intermediate_dim, relu)`` of the features, then
  cross-attention with the features as query and the condition embedding as
  key/value, then two ``Dense(latent_dim)`` heads for the posterior mean and
  log-variance;
* decoder: ``Dense(intermediate_dim, relu)`` of the latent, cross-attention to
  the same condition embedding, ``Dense(F, sigmoid)``.

Tokens: as in the reference model, an embedding vector of width E is read as
a sequence of E tokens of width 1 (Keras ``expand_dims(h, 2)``), so the
attention mixes embedding units; each head projects a token to ``head_dim``
(= ``embed_dim``) and the output is projected back to width 1.

Loss per sample (:func:`loss_terms`): ``F * mean((x - x_hat)**2)`` (the
authors' ``feature_dim * mse``, i.e. the sum of squared errors over the
features) and the analytic KL to N(0, I); the trainer weighs them 0.5 / 0.5.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras' Dense and MultiHeadAttention initialise kernels with Glorot-uniform
# and biases with zeros; the same here, so training starts like the reference.
_KERNEL_INIT = nn.initializers.xavier_uniform()


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Draws ``z = mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``.

    Args:
      key: a typed PRNG key (``jax.random.key``).
      mean: [..., L] posterior mean.
      logvar: [..., L] posterior log-variance.

    Returns:
      [..., L] latent sample.
    """
    chex.assert_equal_shape([mean, logvar])
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps


def _glorot(num_in_axes: int):
    """Glorot-uniform for a kernel whose first ``num_in_axes`` axes are inputs.

    Fans are those of the kernel flattened to 2-D (inputs x outputs), which is
    what Keras uses for the attention kernels of the reference model (one head).
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:num_in_axes])
        flat = _KERNEL_INIT(key, (fan_in, math.prod(shape[num_in_axes:])), dtype)
        return flat.reshape(shape)

    return init


def _scalar_softmax_stats(slope, e):
    """Row maximum and the softmax-weighted moments of ``e`` for logits ``slope_i * e_j``.

    The maximum over j of ``slope_i * e_j`` is ``slope_i * max(e)`` or
    ``slope_i * min(e)``, so nothing [Tq, Tk]-sized has to be kept: XLA fuses
    the exponentials into the three reductions.
    """
    top = jnp.where(slope >= 0, slope * jnp.max(e), slope * jnp.min(e))  # [H, Tq]
    ek = e[None, None, :]  # [1, 1, Tk]
    w = jnp.exp(slope[..., None] * ek - top[..., None])  # [H, Tq, Tk], fused away
    den = jnp.sum(w, -1)
    mean = jnp.sum(w * ek, -1) / den
    return top, den, mean, w


@jax.custom_vjp
def scalar_token_attention(slope: jax.Array, e: jax.Array) -> jax.Array:
    """``sum_j softmax_j(slope_i * e_j) * e_j`` for scalar value tokens.

    Args:
      slope: [H, Tq] per-head, per-query logit slopes.
      e: [Tk] scalar context tokens (keys and values before projection).

    Returns:
      [H, Tq] attention-weighted mean of ``e``.

    The hand-written VJP recomputes the weights from O(H Tq) residuals instead
    of storing [H, Tq, Tk] ones: with p the weights and m the result,
    ``d m_i / d slope_i = Var_p(e)`` and ``d m_i / d e_k = p_ik (1 + slope_i (e_k - m_i))``.
    Under ``vmap`` over lanes and batch rows this keeps the working set small
    (the materialised version was memory-bound on CPU).
    """
    return _scalar_softmax_stats(slope, e)[2]


def _sta_fwd(slope, e):
    top, den, mean, _ = _scalar_softmax_stats(slope, e)
    return mean, (slope, e, top, den, mean)


def _sta_bwd(res, g):
    slope, e, top, den, mean = res
    ek = e[None, None, :]  # [1, 1, Tk]
    p = jnp.exp(slope[..., None] * ek - top[..., None]) / den[..., None]  # [H, Tq, Tk]
    var = jnp.sum(p * jnp.square(ek - mean[..., None]), -1)
    g_slope = g * var
    g_e = jnp.sum(
        (g[..., None] * p) * (1.0 + slope[..., None] * (ek - mean[..., None])), axis=(0, 1)
    )
    return g_slope, g_e


scalar_token_attention.defvjp(_sta_fwd, _sta_bwd)


class CrossAttention(nn.Module):
    """Multi-head dot-product attention of query tokens over context tokens.

    Parameters: ``{query,key,value}_kernel`` [D_in, H, D], ``*_bias`` [H, D],
    ``out_kernel`` [H, D, out_dim], ``out_bias`` [out_dim].

    When query and context tokens are scalars (width 1, as in the pulse CVAE)
    the projections are rank one, and the same attention is computed without
    forming the [T, H, D] projections: with ``q_i = x_i wq + bq`` and
    ``k_j = e_j wk + bk``, ``q_i . k_j = x_i e_j (wq . wk) + e_j (bq . wk) +``
    terms constant in j (which softmax cancels); and since the weights of a row
    sum to 1, ``sum_j a_ij v_j = (sum_j a_ij e_j) wv + bv``.  This costs
    O(H Tq Tk) instead of O(H Tq Tk D); the result equals the general path up
    to float rounding (``scalar_fast_path=False`` forces the general path).

    Attributes:
      num_heads: H.
      head_dim: D, width of each head's query/key/value projection.
      out_dim: width of the output tokens (default: the query width).
      scalar_fast_path: use the rank-one computation for width-1 tokens.
    """

    num_heads: int = 1
    head_dim: int = 64
    out_dim: int | None = None
    scalar_fast_path: bool = True

    @nn.compact
    def __call__(
        self, query: jax.Array, context: jax.Array, mask: jax.Array | None = None
    ) -> jax.Array:
        """Attends.

        Args:
          query: [Tq, Dq] query tokens.
          context: [Tk, Dk] key/value tokens.
          mask: optional [Tq, Tk] bool; False entries are not attended to.

        Returns:
          [Tq, out_dim] (out_dim defaults to Dq).
        """
        chex.assert_rank([query, context], 2)
        if mask is not None:
            chex.assert_shape(mask, (query.shape[0], context.shape[0]))
        H, D = self.num_heads, self.head_dim
        dq, dk = query.shape[-1], context.shape[-1]
        out_dim = self.out_dim or dq
        zeros = nn.initializers.zeros
        wq = self.param("query_kernel", _glorot(1), (dq, H, D))
        bq = self.param("query_bias", zeros, (H, D))
        wk = self.param("key_kernel", _glorot(1), (dk, H, D))
        bk = self.param("key_bias", zeros, (H, D))
        wv = self.param("value_kernel", _glorot(1), (dk, H, D))
        bv = self.param("value_bias", zeros, (H, D))
        wo = self.param("out_kernel", _glorot(2), (H, D, out_dim))
        bo = self.param("out_bias", zeros, (out_dim,))
        scale = 1.0 / math.sqrt(D)

        if self.scalar_fast_path and dq == 1 and dk == 1:
            x, e = query[:, 0], context[:, 0]  # [Tq], [Tk]
            # logits[h, i, j] = e_j * slope[h, i]
            slope = scale * (
                jnp.sum(wq[0] * wk[0], -1)[:, None] * x[None, :] + jnp.sum(bq * wk[0], -1)[:, None]
            )  # [H, Tq]
            if mask is None:
                mix = scalar_token_attention(slope, e)  # [H, Tq]
            else:
                logits = slope[:, :, None] * e[None, None, :]
                logits = jnp.where(mask[None], logits, jnp.finfo(logits.dtype).min)
                mix = jnp.einsum("hqk,k->hq", jax.nn.softmax(logits, axis=-1), e)
            vo = jnp.einsum("hd,hdo->ho", wv[0], wo)  # [H, out]
            bvo = jnp.einsum("hd,hdo->o", bv, wo)  # [out]
            out = jnp.einsum("hq,ho->qo", mix, vo) + bvo[None] + bo[None]
        else:
            q = jnp.einsum("tq,qhd->thd", query, wq) + bq[None]  # [Tq, H, D]
            k = jnp.einsum("tk,khd->thd", context, wk) + bk[None]  # [Tk, H, D]
            logits = scale * jnp.einsum("qhd,khd->hqk", q, k)
            if mask is not None:
                logits = jnp.where(mask[None], logits, jnp.finfo(logits.dtype).min)
            weights = jax.nn.softmax(logits, axis=-1)  # [H, Tq, Tk]
            v = jnp.einsum("tk,khd->thd", context, wv) + bv[None]  # [Tk, H, D]
            mixed = jnp.einsum("hqk,khd->qhd", weights, v)  # [Tq, H, D]
            out = jnp.einsum("qhd,hdo->qo", mixed, wo) + bo[None]
        chex.assert_shape(out, (query.shape[0], out_dim))
        return out


class PulseCVAE(nn.Module):
    """Cross-attention conditional VAE for one sample.

    Attributes:
      feature_dim: F, number of features (21: U1..U21).
      condition_dim: C, condition width (2: SOC, SOH).
      embed_dim: E, width of the condition embedding (and the head width).
      intermediate_dim: I, width of the feature and latent embeddings (the number
        of query tokens of each cross-attention).
      latent_dim: L.
      num_heads: attention heads.
    """

    feature_dim: int = 21
    condition_dim: int = 2
    embed_dim: int = 64
    intermediate_dim: int = 64
    latent_dim: int = 2
    num_heads: int = 1

    def setup(self):
        dense = lambda n, name: nn.Dense(n, kernel_init=_KERNEL_INIT, name=name)  # noqa: E731
        self.condition_embedding = dense(self.embed_dim, "condition_embedding")
        self.encoder_embedding = dense(self.intermediate_dim, "encoder_embedding")
        self.encoder_attention = CrossAttention(self.num_heads, self.embed_dim, 1)
        self.z_mean = dense(self.latent_dim, "z_mean")
        self.z_logvar = dense(self.latent_dim, "z_logvar")
        self.decoder_embedding = dense(self.intermediate_dim, "decoder_embedding")
        self.decoder_attention = CrossAttention(self.num_heads, self.embed_dim, 1)
        self.decoder_out = dense(self.feature_dim, "decoder_out")

    def condition_tokens(self, cond: jax.Array) -> jax.Array:
        """[C] normalised condition -> [E, 1] condition tokens."""
        chex.assert_shape(cond, (self.condition_dim,))
        return nn.relu(self.condition_embedding(cond))[:, None]

    def encode(self, x: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[F] features, [C] condition -> ([L] mean, [L] log-variance)."""
        chex.assert_shape(x, (self.feature_dim,))
        tokens = nn.relu(self.encoder_embedding(x))[:, None]  # [I, 1]
        h = self.encoder_attention(tokens, self.condition_tokens(cond))[:, 0]  # [I]
        mean, logvar = self.z_mean(h), self.z_logvar(h)
        chex.assert_shape([mean, logvar], (self.latent_dim,))
        return mean, logvar

    def decode(self, z: jax.Array, cond: jax.Array) -> jax.Array:
        """[L] latent, [C] condition -> [F] normalised features in (0, 1)."""
        chex.assert_shape(z, (self.latent_dim,))
        tokens = nn.relu(self.decoder_embedding(z))[:, None]  # [I, 1]
        h = self.decoder_attention(tokens, self.condition_tokens(cond))[:, 0]
        out = nn.sigmoid(self.decoder_out(h))
        chex.assert_shape(out, (self.feature_dim,))
        return out

    def __call__(self, x: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Reconstructs one sample; draws z from the ``latent`` rng stream.

        Returns:
          ([F] reconstruction, [L] posterior mean, [L] posterior log-variance).
        """
        mean, logvar = self.encode(x, cond)
        z = reparameterize(self.make_rng("latent"), mean, logvar)
        return self.decode(z, cond), mean, logvar


def loss_terms(
    x: jax.Array, x_hat: jax.Array, mean: jax.Array, logvar: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-sample reconstruction and KL terms.

    Args:
      x, x_hat: [F] target and reconstruction (normalised).
      mean, logvar: [L] posterior parameters.

    Returns:
      (reconstruction, kl) scalars: ``F * mean((x - x_hat)**2)`` and
      ``-0.5 * sum(1 + logvar - mean**2 - exp(logvar))``.
    """
    chex.assert_equal_shape([x, x_hat])
    rec = x.shape[-1] * jnp.mean(jnp.square(x - x_hat))
    kl = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mean) - jnp.exp(logvar))
    return rec, kl
