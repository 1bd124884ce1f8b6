"""Multi-head attention with interchangeable implementations.

Three implementations of softmax(q k^T * scale) v, equal to ~1e-6 in float32:

- ``"full"``: materialises the ``[B, heads, N, M]`` score tensor.
- ``"chunked"``: memory-efficient attention (Rabe & Staats 2021,
  arXiv:2112.05682): queries are processed ``chunk_size`` at a time under
  ``lax.map``, each chunk rematerialised in the backward pass
  (``jax.checkpoint``), and keys longer than ``key_chunk_size`` are scanned in
  blocks with an online (log-sum-exp) softmax. Peak memory is
  ``O(B * heads * chunk_size * min(M, key_chunk_size))`` in the forward *and*
  backward pass instead of ``O(B * heads * N * M)``.
- ``"dot_product"``: :func:`jax.nn.dot_product_attention`; on GPU with
  bfloat16/float16 inputs it asks for cuDNN flash attention and falls back to
  XLA where cuDNN does not support the shapes.

Which to pick (fwd+bwd times measured in Nov 2026 with jax 0.10-0.11):
at 256 tokens (a 16x16 map) "full" is fastest everywhere: on 2 CPU cores the
chunked form costs ~1.2-1.3x (no fused attention on XLA:CPU, so chunking only
adds loop overhead), and on an H200 cuDNN is ~2x slower than XLA's plain
einsums. At 4096 tokens (64x64) "chunked" matches "full" on CPU with ~20x less
temporary memory, and on GPU in bfloat16 "dot_product" (cuDNN) is 4x faster.

Layout follows :func:`jax.nn.dot_product_attention`: ``[batch, length, heads,
head_dim]``. Softmax always runs in float32, whatever the compute dtype.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Impl = Literal["full", "chunked", "dot_product"]
IMPLS = ("full", "chunked", "dot_product")

# Masked scores get the most negative finite float32 rather than -inf, so a
# fully masked row gives a uniform distribution instead of NaN (as in
# jax.nn.dot_product_attention). Key padding added by the chunked form gets a
# true -inf so it never receives weight, not even in a fully masked row.
_MASKED = float(jnp.finfo(jnp.float32).min)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    impl: Impl = "full",
    chunk_size: int = 64,
    key_chunk_size: int = 4096,
    mask: jax.Array | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> jax.Array:
    """Scaled dot-product attention.

    Args:
      q: ``[B, N, heads, D]`` queries.
      k: ``[B, M, heads, D]`` keys.
      v: ``[B, M, heads, Dv]`` values (``Dv == D`` for ``"dot_product"``).
      impl: ``"full"``, ``"chunked"`` or ``"dot_product"`` (module docstring).
      chunk_size: queries per chunk for ``"chunked"``.
      key_chunk_size: ``"chunked"`` attends to at most this many keys at once;
        longer key sequences are scanned with an online softmax (4096, as in
        Rabe & Staats: the scan's backward pass is slow on CPU, so it only
        starts where one block's scores would grow large).
      mask: bool, broadcastable to ``[B, heads, N, M]``; True = may attend.
      causal: query i attends only to keys j <= i.
      scale: score scale, default ``D ** -0.5``.

    Returns:
      ``[B, N, heads, Dv]`` in the dtype of ``v``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if impl == "full":
        s = _scores(q, k, scale)
        s = _apply_masks(s, mask, causal, 0, 0)
        return _weighted_values(jax.nn.softmax(s, axis=-1), v)
    if impl == "chunked":
        return _chunked(q, k, v, mask, causal, scale, chunk_size, key_chunk_size)
    if impl == "dot_product":
        return _dot_product(q, k, v, mask, causal, scale)
    raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")


@jax.custom_vjp
def query_key_scores(q: jax.Array, k: jax.Array) -> jax.Array:
    """``q k^T`` per head: ``[B, n, h, D] x [B, m, h, D] -> [B, h, n, m]`` float32.

    Accumulated in float32 whatever the inputs' dtype (a stable softmax under bfloat16). The
    backward pass computes in the inputs' dtype: differentiated as written, the float32
    cotangent would turn both of its matmuls into float32 ones under a bfloat16 policy.
    """
    return jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)


def _scores_fwd(q, k):
    return query_key_scores(q, k), (q, k)


def _scores_bwd(residuals, ds):
    q, k = residuals
    ds = ds.astype(q.dtype)
    dq = jnp.einsum("bhqk,bkhd->bqhd", ds, k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bhqk,bqhd->bkhd", ds, q, preferred_element_type=jnp.float32)
    return dq.astype(q.dtype), dk.astype(k.dtype)


query_key_scores.defvjp(_scores_fwd, _scores_bwd)


def _scores(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
    """[B, n, h, D] x [B, m, h, D] -> [B, h, n, m] float32 (stable softmax under bf16)."""
    return query_key_scores(q, k) * scale


def _weighted_values(p: jax.Array, v: jax.Array) -> jax.Array:
    """[B, h, n, m] probabilities x [B, m, h, Dv] -> [B, n, h, Dv] in v's dtype."""
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)


def _apply_masks(s, mask, causal, q_start, k_start):
    """Masks scores ``s: [B, h, n, m]`` whose first query/key sit at q_start/k_start."""
    if mask is not None:
        s = jnp.where(mask, s, _MASKED)
    if causal:
        n, m = s.shape[-2:]
        q_pos = q_start + lax.broadcasted_iota(jnp.int32, (n, m), 0)
        k_pos = k_start + lax.broadcasted_iota(jnp.int32, (n, m), 1)
        s = jnp.where(k_pos <= q_pos, s, _MASKED)
    return s


def _split(x: jax.Array, axis: int, size: int, fill) -> jax.Array:
    """Pads ``axis`` of x to a multiple of size and moves the chunk index to axis 0."""
    n = x.shape[axis]
    num = -(-n // size)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, num * size - n)
    x = jnp.pad(x, pad, constant_values=fill)
    x = x.reshape(x.shape[:axis] + (num, size) + x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)


def _chunked(q, k, v, mask, causal, scale, chunk_size, key_chunk_size):
    b, n, h, _ = q.shape
    qc = min(chunk_size, n)
    q_chunks = _split(q, 1, qc, 0)  # [nq, B, qc, h, D]
    starts = jnp.arange(q_chunks.shape[0], dtype=jnp.int32) * qc
    # A mask that varies over queries is chunked with them; one that is
    # broadcast over queries (size 1) is shared by every chunk.
    per_query = mask is not None and mask.shape[2] == n
    mask_chunks = _split(mask, 2, qc, True) if per_query else None

    def one_chunk(start, q_c, mask_c):
        mask_c = mask_c if per_query else mask
        return _attend_keys(q_c, k, v, mask_c, causal, scale, start, key_chunk_size)

    # Rematerialising each chunk in the backward pass is what keeps training
    # memory at one chunk's scores; it was also the fastest chunked variant
    # measured on CPU (fewer, smaller live buffers than stacked residuals).
    one_chunk = jax.checkpoint(one_chunk, prevent_cse=False)
    out = lax.map(lambda xs: one_chunk(*xs), (starts, q_chunks, mask_chunks))
    out = jnp.moveaxis(out, 0, 1)  # [B, nq, qc, h, Dv]
    return out.reshape(b, -1, h, out.shape[-1])[:, :n]


def _attend_keys(q, k, v, mask, causal, scale, q_start, key_chunk_size):
    """Attention of one query chunk ``q: [B, qc, h, D]`` over all keys -> [B, qc, h, Dv]."""
    m = k.shape[1]
    if m <= key_chunk_size:  # Keys in one block: a plain softmax, no scan.
        s = _apply_masks(_scores(q, k, scale), mask, causal, q_start, 0)
        return _weighted_values(jax.nn.softmax(s, axis=-1), v)

    kc = key_chunk_size
    k_chunks, v_chunks = _split(k, 1, kc, 0), _split(v, 1, kc, 0)
    k_starts = jnp.arange(k_chunks.shape[0], dtype=jnp.int32) * kc
    per_key = mask is not None and mask.shape[3] == m
    mask_chunks = _split(mask, 3, kc, False) if per_key else None

    def body(carry, xs):
        run_max, run_sum, acc = carry  # [B, h, qc], [B, h, qc], [B, h, qc, Dv] float32
        k_start, k_c, v_c, mask_c = xs
        s = _apply_masks(
            _scores(q, k_c, scale), mask_c if per_key else mask, causal, q_start, k_start
        )
        k_pos = k_start + lax.broadcasted_iota(jnp.int32, s.shape[-1:], 0)
        s = jnp.where(k_pos < m, s, -jnp.inf)  # padding keys of the last block
        new_max = jnp.maximum(run_max, s.max(-1))
        p = jnp.exp(s - new_max[..., None])
        correction = jnp.exp(run_max - new_max)  # rescales the earlier blocks' sums
        run_sum = run_sum * correction + p.sum(-1)
        pv = jnp.einsum("bhqk,bkhd->bhqd", p, v_c, preferred_element_type=jnp.float32)
        acc = acc * correction[..., None] + pv
        return (new_max, run_sum, acc), None

    b, qc, h, _ = q.shape
    init = (
        jnp.full((b, h, qc), -jnp.inf, jnp.float32),
        jnp.zeros((b, h, qc), jnp.float32),
        jnp.zeros((b, h, qc, v.shape[-1]), jnp.float32),
    )
    (_, run_sum, acc), _ = lax.scan(body, init, (k_starts, k_chunks, v_chunks, mask_chunks))
    return (acc / run_sum[..., None]).transpose(0, 2, 1, 3).astype(v.dtype)


def _dot_product(q, k, v, mask, causal, scale):
    kwargs = dict(mask=mask, is_causal=causal, scale=scale)
    if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
        try:  # cuDNN flash attention; it rejects some shapes at trace time.
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn", **kwargs)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return jax.nn.dot_product_attention(q, k, v, **kwargs)


class MultiHeadAttention(nnx.Module):
    """Multi-head self- or cross-attention on token sequences.

    ``x: [B, N, features]`` attends to ``context: [B, M, context_features]``
    (``x`` itself when no context is given); returns ``[B, N, out_features]``
    in the compute dtype. Parameters are float32; matmuls run in ``dtype``.
    ``qkv_bias=False`` drops the query/key/value biases (Stable Diffusion's transformer
    blocks have none; the output projection keeps its bias).
    """

    def __init__(
        self,
        features: int,
        *,
        num_heads: int = 1,
        context_features: int | None = None,
        out_features: int | None = None,
        impl: Impl = "full",
        chunk_size: int = 64,
        zero_init_out: bool = False,
        qkv_bias: bool = True,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if features % num_heads:
            raise ValueError(f"features={features} is not divisible by num_heads={num_heads}")
        if impl not in IMPLS:
            raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
        context_features = context_features or features
        out_features = out_features or features
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")  # as in DDPM
        dense = dict(kernel_init=init, use_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.query = nnx.Linear(features, features, **dense)
        self.key = nnx.Linear(context_features, features, **dense)
        self.value = nnx.Linear(context_features, features, **dense)
        # Zero output projection: the residual branch starts as the identity
        # (DDPM's init_scale=0 on proj_out).
        out_init = nnx.initializers.zeros if zero_init_out else init
        self.out = nnx.Linear(features, out_features, kernel_init=out_init, dtype=dtype, rngs=rngs)
        self.num_heads = num_heads
        self.impl = impl
        self.chunk_size = chunk_size

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        causal: bool = False,
    ) -> jax.Array:
        context = x if context is None else context

        def heads(t):  # [B, L, C] -> [B, L, heads, C / heads]
            return t.reshape(t.shape[:2] + (self.num_heads, -1))

        q, k, v = heads(self.query(x)), heads(self.key(context)), heads(self.value(context))
        out = attention(
            q, k, v, impl=self.impl, chunk_size=self.chunk_size, mask=mask, causal=causal
        )
        return self.out(out.reshape(x.shape[:2] + (-1,)))
