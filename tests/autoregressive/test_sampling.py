"""Token sampling: logit filters, guidance, KV cache = full recomputation, sliding windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.autoregressive.sampling import (
    filter_logits,
    guided_logits,
    sample_grid,
    sample_tokens,
    window_origin,
)
from zoo.nn.transformer import TokenDecoder

V, P, PV, C, M = 11, 2, 5, 8, 3  # image vocab, prefix length/vocab, context width/length
WINDOW = (2, 3)  # the models' training grid: N = 6 tokens
N = WINDOW[0] * WINDOW[1]
PREFIX = jnp.array([[1, 2], [3, 4], [0, 1]], jnp.int32)
CONTEXT = jax.random.normal(jax.random.key(7), (3, M, C))
CONTEXT_MASK = jnp.array([[True, True, False], [True, False, False], [True, True, True]])


def _decoder(**kwargs):
    args = dict(prefix_vocab_size=PV, prefix_len=P, dim=16, depth=1, num_heads=2) | kwargs
    model = TokenDecoder(V, N, **args, rngs=nnx.Rngs(0))
    # Logits spread over a few units, as a trained model's: at GPT-2 init they are ~0.1 and
    # the sampling noise would hide a sampler that feeds the model the wrong tokens.
    model.head.kernel[...] = 50.0 * model.head.kernel[...]
    return model


@pytest.fixture(scope="module")
def plain():
    return _decoder()


@pytest.fixture(scope="module")
def cross():
    return _decoder(context_dim=C)


def _finite(x) -> np.ndarray:
    return np.isfinite(np.asarray(x))


def test_top_k_keeps_exactly_the_k_largest():
    logits = jax.random.normal(jax.random.key(0), (3, 10))
    for k in (1, 4, 10):
        out = filter_logits(logits, top_k=k)
        kept = _finite(out)
        np.testing.assert_array_equal(kept.sum(-1), k)
        largest = np.argsort(-np.asarray(logits), axis=-1)[:, :k]
        np.testing.assert_array_equal(np.sort(np.nonzero(kept)[1].reshape(3, k)), np.sort(largest))
        np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(logits)[kept])
    np.testing.assert_array_equal(_finite(filter_logits(logits, top_k=0)), True)  # 0 = all


def test_top_p_keeps_the_nucleus():
    probs = np.array([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = jnp.log(jnp.asarray(probs, jnp.float32))
    for top_p, nucleus in [
        (0.45, [1]),  # the top token alone reaches 0.45 (and is always kept)
        (0.01, [1]),
        (0.7, [1, 3]),  # 0.5 < 0.7 <= 0.8
        (0.9, [1, 2, 3]),  # 0.8 < 0.9 <= 0.95
        (0.99, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3]),
    ]:
        out = filter_logits(logits, top_p=top_p)
        np.testing.assert_array_equal(np.nonzero(_finite(out)[0])[0], nucleus, err_msg=f"{top_p}")
    # Temperature first: at T = 0.1 the top token holds ~99% and is the nucleus alone.
    np.testing.assert_array_equal(
        _finite(filter_logits(logits, temperature=0.1, top_p=0.9)), [[0, 1, 0, 0]]
    )
    # top-k first, then the nucleus of what is left: {0.5, 0.3} renormalised to {0.625, 0.375}.
    np.testing.assert_array_equal(
        _finite(filter_logits(logits, top_k=2, top_p=0.6)), [[0, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        _finite(filter_logits(logits, top_k=2, top_p=0.65)), [[0, 1, 0, 1]]
    )


def test_temperature_divides_the_logits():
    logits = jax.random.normal(jax.random.key(1), (2, 7))
    np.testing.assert_allclose(filter_logits(logits, temperature=2.0), logits / 2.0, rtol=1e-6)
    hot, plain, cold = (jax.nn.softmax(filter_logits(logits, temperature=t)) for t in (4, 1, 0.25))
    assert (hot.max(-1) < plain.max(-1)).all() and (cold.max(-1) > plain.max(-1)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(temperature=0.0), "temperature"), (dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p")],
)
def test_bad_filter_arguments_are_an_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        filter_logits(jnp.zeros((1, 3)), **kwargs)


def test_guided_logits_convention():
    cond, uncond = jnp.array([[2.0, -1.0]]), jnp.array([[0.5, 0.5]])
    np.testing.assert_array_equal(guided_logits(cond, uncond, 1.0), cond)  # no guidance
    np.testing.assert_array_equal(guided_logits(cond, uncond, 0.0), uncond)  # unconditional
    np.testing.assert_allclose(guided_logits(cond, uncond, 3.0), [[5.0, -4.0]])  # 3c - 2u


def _both_paths(model, key, **kwargs):
    """``(cached, recomputed)`` tokens, compiled together."""

    @nnx.jit
    def run(m, k):
        return tuple(sample_tokens(m, PREFIX, k, use_cache=c, **kwargs) for c in (True, False))

    return run(model, key)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("plain", dict()),
        ("guided prefix", dict(guidance_scale=3.0, null_prefix=0, top_k=5)),
        (
            "guided context",
            dict(
                context=CONTEXT,
                context_mask=CONTEXT_MASK,
                guidance_scale=2.5,
                null_context=jnp.zeros((M, C)),  # an empty caption: all padding
                null_context_mask=jnp.zeros((M,), bool),
                temperature=0.8,
                top_p=0.9,
            ),
        ),
    ],
)
def test_kv_cache_sampling_equals_full_recomputation(plain, cross, name, kwargs):
    model = cross if "context" in kwargs else plain
    cached, full = _both_paths(model, jax.random.key(3), **kwargs)
    assert cached.shape == (3, N) and cached.dtype == jnp.int32
    assert ((0 <= np.asarray(cached)) & (np.asarray(cached) < V)).all()
    assert len(np.unique(np.asarray(cached))) > 1  # something was sampled
    np.testing.assert_array_equal(cached, full)


def test_guidance_scale_one_is_unguided_and_zero_is_the_null_condition(plain):
    @nnx.jit
    def run(m, k):
        unguided = sample_tokens(m, PREFIX, k)
        scale_one = sample_tokens(m, PREFIX, k, guidance_scale=1.0, null_prefix=0)
        scale_zero = sample_tokens(m, PREFIX, k, guidance_scale=0.0, null_prefix=0)
        null = sample_tokens(m, jnp.zeros_like(PREFIX), k)
        return unguided, scale_one, scale_zero, null

    unguided, scale_one, scale_zero, null = run(plain, jax.random.key(4))
    np.testing.assert_array_equal(scale_one, unguided)
    np.testing.assert_array_equal(scale_zero, null)  # the halves are mixed, not swapped
    assert (np.asarray(null) != np.asarray(unguided)).any()


def test_sliding_window_fills_a_larger_grid(plain):
    sample = nnx.jit(
        lambda m, k: sample_grid(
            m, PREFIX, k, grid=(4, 5), window=WINDOW, guidance_scale=2.0, null_prefix=0
        )
    )
    tokens = np.asarray(sample(plain, jax.random.key(5)))
    assert tokens.shape == (3, 4, 5) and tokens.dtype == np.int32
    assert ((0 <= tokens) & (tokens < V)).all() and len(np.unique(tokens)) > 1


def test_window_equal_to_the_grid_reproduces_sample_tokens(cross):
    kwargs = dict(context=CONTEXT, context_mask=CONTEXT_MASK, guidance_scale=2.0, top_k=6)
    kwargs |= dict(null_context=jnp.zeros((M, C)))

    @nnx.jit
    def run(m, k):
        grid = sample_grid(m, PREFIX, k, grid=WINDOW, window=WINDOW, **kwargs)
        return grid, sample_tokens(m, PREFIX, k, use_cache=False, **kwargs)

    grid, tokens = run(cross, jax.random.key(6))
    np.testing.assert_array_equal(np.asarray(grid).reshape(3, N), tokens)


PROBE_V = 97  # prime, so a wrong crop changes the probe's token with high probability


def _probe_token(prefix: np.ndarray, seen: np.ndarray, r: int) -> np.ndarray:
    """The probe's token after ``seen: [B, r]``: a position-weighted hash of its input."""
    weights = np.arange(1, r + 1)
    return (((seen + 1) * weights).sum(-1) + 5 * r + prefix.sum(-1)) % PROBE_V


class WindowProbe:
    """A stand-in decoder that records every ``image`` it is given; its logits at position r
    put all the mass on ``_probe_token(prefix, image[:, :r], r)`` (causal, like the model)."""

    num_tokens = N

    def __init__(self):
        self.inputs = []

    def __call__(self, prefix, image, *, context=None, context_mask=None):
        jax.debug.callback(lambda x: self.inputs.append(np.asarray(x)), image, ordered=True)
        n = image.shape[1]
        weighted = (image + 1) * jnp.arange(1, n + 1)
        seen = jnp.concatenate([jnp.zeros_like(weighted[:, :1]), jnp.cumsum(weighted, 1)], 1)
        token = (seen + 5 * jnp.arange(n + 1) + prefix.sum(-1, keepdims=True)) % PROBE_V
        return 30.0 * jax.nn.one_hot(token, PROBE_V), None


def test_each_token_sees_exactly_the_drawn_part_of_its_window():
    (H, W), (h, w) = (4, 5), WINDOW
    probe = WindowProbe()
    prefix = np.asarray(PREFIX)
    grid = jax.jit(lambda k: sample_grid(probe, PREFIX, k, grid=(H, W), window=WINDOW, top_k=1))
    tokens = np.asarray(grid(jax.random.key(0)))
    assert len(probe.inputs) == H * W

    expected = np.zeros_like(tokens)  # the grid replayed in numpy, one raster step at a time
    for p in range(H * W):
        i, j = divmod(p, W)
        # Centred on (i, j) where it fits, clipped to the grid (the rule, restated here).
        top, left = min(max(i - h // 2, 0), H - h), min(max(j - w // 2, 0), W - w)
        assert tuple(int(t) for t in window_origin(i, j, (H, W), (h, w))) == (top, left)
        assert top <= i < top + h and left <= j < left + w
        cells = [(top + a, left + b) for a in range(h) for b in range(w)]
        r = cells.index((i, j))
        # The window's raster prefix before (i, j) is exactly its already-drawn cells.
        assert set(cells[:r]) == {(a, b) for a, b in cells if a * W + b < p}
        crop = expected[:, top : top + h, left : left + w].reshape(len(prefix), -1)
        np.testing.assert_array_equal(probe.inputs[p], crop[:, : N - 1], err_msg=f"step {p}")
        expected[:, i, j] = _probe_token(prefix, crop[:, :r], r)
    np.testing.assert_array_equal(tokens, expected)


def test_bad_windows_are_an_error(plain):
    with pytest.raises(ValueError, match="holds 4 tokens"):
        sample_grid(plain, PREFIX, jax.random.key(0), grid=(4, 5), window=(2, 2))
    with pytest.raises(ValueError, match="fit"):
        sample_grid(plain, PREFIX, jax.random.key(0), grid=(4, 2), window=WINDOW)
    with pytest.raises(ValueError, match="null_prefix"):
        sample_tokens(plain, PREFIX, jax.random.key(0), guidance_scale=2.0)
