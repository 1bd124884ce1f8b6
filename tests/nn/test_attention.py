"""The three attention implementations agree, in values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.attention import MultiHeadAttention
from zoo.nn.attention import attention as eager_attention

# One compilation per call instead of one per eager op keeps the tests fast.
attention = jax.jit(
    eager_attention, static_argnames=("impl", "chunk_size", "key_chunk_size", "causal")
)

# Small chunks so that every code path runs: padded query chunks, and keys
# longer than key_chunk_size scanned with the online softmax.
CHUNKED = dict(impl="chunked", chunk_size=8, key_chunk_size=16)
CASES = {
    "self_divisible": (32, 32),
    "self_ragged": (37, 37),  # neither chunk size divides 37
    "cross_short_keys": (21, 11),  # keys fit one block: plain softmax per query chunk
    "cross_long_keys": (13, 53),  # keys scanned in 4 blocks, last one padded
}


# Inputs come from numpy: jax samplers would compile once per shape.
RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _qkv(n, m, b=2, h=2, d=8):
    return _normal(b, n, h, d), _normal(b, m, h, d), _normal(b, m, h, d)


def _mask(n, m, b=2):
    mask = RNG.random((b, 1, n, m)) < 0.7
    mask[:, :, 0, :] = False  # a fully masked row: uniform weights, not NaN
    return mask


def _key_padding_mask(m, b=2):
    """[B, 1, 1, M]: the last keys of each sequence are padding (broadcast over queries)."""
    return np.arange(m)[None, None, None, :] < np.array([m, m // 2])[:, None, None, None]


@pytest.mark.parametrize(
    "case,masking",
    [
        ("self_divisible", "none"),
        ("self_ragged", "random+causal"),
        ("cross_short_keys", "random+causal"),
        ("cross_long_keys", "none"),
        ("cross_long_keys", "random+causal"),
        ("cross_long_keys", "key_padding"),
    ],
)
def test_implementations_agree(case, masking):
    """random+causal: a random [B, 1, N, M] mask with one fully masked row, and causal."""
    n, m = CASES[case]
    q, k, v = _qkv(n, m)
    kw = {
        "none": {},
        "random+causal": dict(mask=_mask(n, m), causal=True),
        "key_padding": dict(mask=_key_padding_mask(m)),
    }[masking]
    full = attention(q, k, v, impl="full", **kw)
    assert full.shape == (2, n, 2, 8)
    assert np.isfinite(full).all()
    np.testing.assert_allclose(attention(q, k, v, **CHUNKED, **kw), full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(attention(q, k, v, impl="dot_product", **kw), full, atol=1e-5)


@pytest.mark.parametrize("case", ["self_ragged", "cross_long_keys"])
def test_gradients_agree(case):
    n, m = CASES[case]
    q, k, v = _qkv(n, m)
    cotangent = _normal(2, n, 2, 8)
    mask = _mask(n, m)

    def grads(**impl):
        loss = lambda q, k, v: jnp.vdot(attention(q, k, v, mask=mask, **impl), cotangent)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    full = grads(impl="full")
    for other in (grads(**CHUNKED), grads(impl="dot_product")):
        for g, g_full in zip(other, full, strict=True):
            np.testing.assert_allclose(g, g_full, atol=1e-5, rtol=1e-5)


def test_unknown_impl_raises():
    q, k, v = _qkv(4, 4)
    with pytest.raises(ValueError, match="impl"):
        attention(q, k, v, impl="flash")


def test_module_cross_attention_same_for_every_impl():
    x, context = _normal(2, 10, 16), _normal(2, 7, 12)
    outs = []
    for impl in ("full", "chunked", "dot_product"):
        mha = MultiHeadAttention(
            16, num_heads=4, context_features=12, impl=impl, chunk_size=3, rngs=nnx.Rngs(0)
        )
        outs.append(nnx.jit(lambda mha, x, c: mha(x, c))(mha, x, context))
    assert outs[0].shape == (2, 10, 16)
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-5, rtol=1e-5)


def test_module_zero_init_out_gives_zeros():
    mha = MultiHeadAttention(8, zero_init_out=True, rngs=nnx.Rngs(0))
    assert not mha(jnp.ones((1, 5, 8))).any()
