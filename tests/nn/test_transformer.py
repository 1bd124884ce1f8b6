"""The token decoder: causality, cross-attention padding, KV cache = full pass, dropout, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.transformer import TokenDecoder

V, N, P, PV, C = 13, 6, 3, 7, 8  # image vocab, image tokens, prefix length/vocab, context width


def _decoder(**kwargs):
    args = dict(prefix_vocab_size=PV, prefix_len=P, dim=16, depth=2, num_heads=2) | kwargs
    return TokenDecoder(V, N, **args, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model():  # two blocks, so the cache must carry every block's keys
    return _decoder(context_dim=C, prefix_head=True)


@pytest.fixture(scope="module")
def forward():
    return nnx.jit(
        lambda m, prefix, image, ctx, mask: m(prefix, image, context=ctx, context_mask=mask)
    )


@nnx.jit
def _run(m, prefix, image, dropout_key):
    return m(prefix, image, dropout_key=dropout_key)


def _inputs(seed: int, b: int = 2, n: int = N - 1):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    prefix = jax.random.randint(k1, (b, P), 0, PV)
    image = jax.random.randint(k2, (b, n), 0, V)
    context = jax.random.normal(k3, (b, 4, C))
    mask = jnp.array([[True, True, True, False], [True, False, False, False]])[:b]
    return prefix, image, context, mask


def _differs(a, b) -> bool:
    return float(jnp.abs(a - b).max()) > 1e-4


def test_output_shapes_and_dtypes(model, forward):
    prefix, image, context, mask = _inputs(0)
    for n in (0, N - 1):
        image_logits, prefix_logits = forward(model, prefix, image[:, :n], context, mask)
        assert image_logits.shape == (2, n + 1, V) and image_logits.dtype == jnp.float32
        assert prefix_logits.shape == (2, P - 1, PV) and prefix_logits.dtype == jnp.float32
        assert np.isfinite(np.asarray(image_logits)).all()
    # Unconditional (one start token), no heads beyond image logits, bfloat16 compute.
    args = dict(prefix_vocab_size=1, prefix_len=1, dim=16, depth=1, num_heads=4)
    plain = TokenDecoder(V, N, **args, dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
    start = jnp.zeros((3, 1), jnp.int32)
    image_logits, prefix_logits = _run(plain, start, image[:1].repeat(3, 0), None)
    assert image_logits.shape == (3, N, V) and image_logits.dtype == jnp.float32
    assert prefix_logits is None


def test_later_tokens_never_change_earlier_logits(model, forward):
    prefix, image, context, mask = _inputs(1)
    logits, prefix_logits = forward(model, prefix, image, context, mask)
    t = 2  # image token t is read at position P + t; it may only affect image logits > t
    logits_t, prefix_logits_t = forward(model, prefix, image.at[:, t].add(1) % V, context, mask)
    np.testing.assert_allclose(logits_t[:, : t + 1], logits[:, : t + 1], atol=1e-6)
    assert all(_differs(logits_t[:, i], logits[:, i]) for i in range(t + 1, N))
    np.testing.assert_allclose(prefix_logits_t, prefix_logits, atol=1e-6)
    # Prefix token j conditions every image token and the prefix predictions from j on.
    j = P - 2
    logits_p, prefix_logits_p = forward(model, prefix.at[:, j].add(1) % PV, image, context, mask)
    assert all(_differs(logits_p[:, i], logits[:, i]) for i in range(N))
    np.testing.assert_allclose(prefix_logits_p[:, :j], prefix_logits[:, :j], atol=1e-6)
    assert _differs(prefix_logits_p[:, j], prefix_logits[:, j])


def test_padded_context_is_ignored(model, forward):
    prefix, image, context, mask = _inputs(2)
    logits, _ = forward(model, prefix, image, context, mask)
    noise = 100.0 * jax.random.normal(jax.random.key(9), context.shape)
    padded_noise = jnp.where(mask[..., None], context, noise)
    np.testing.assert_allclose(
        forward(model, prefix, image, padded_noise, mask)[0], logits, atol=1e-5
    )
    # The real context tokens do matter, and so does the mask.
    real_noise = jnp.where(mask[..., None], noise, context)
    assert all(
        _differs(forward(model, prefix, image, real_noise, mask)[0][b], logits[b]) for b in (0, 1)
    )
    all_real = jnp.ones_like(mask)
    assert _differs(forward(model, prefix, image, context, all_real)[0], logits)


def test_kv_cache_decoding_equals_the_full_pass(model, forward):
    prefix, image, context, mask = _inputs(3)
    full, _ = forward(model, prefix, image, context, mask)
    prefill = nnx.jit(lambda m, p, c, k, cache: m.prefill(p, cache, context=c, context_mask=k))
    decode = nnx.jit(lambda m, token, index, cache: m.decode(token, index, cache))
    cache = model.init_cache(2)
    assert cache.layers[0].k.shape == (2, P + N - 1, 2, 8)
    logits, cache = prefill(model, prefix, context, mask, cache)
    steps = [logits]
    for i in range(N - 1):  # one compiled decode for every (traced) index
        logits, cache = decode(model, image[:, i], jnp.int32(i), cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.stack(steps, axis=1), full, atol=1e-5)


def test_dropout_needs_a_key_in_train_mode_and_is_off_in_eval():
    model = _decoder(depth=1, dropout=0.5)
    prefix, image, _, _ = _inputs(4)
    with pytest.raises(ValueError, match="dropout_key"):
        _run(model, prefix, image, None)
    keys = jax.random.split(jax.random.key(0), 2)  # one key per example
    a = _run(model, prefix, image, keys)[0]
    assert _differs(a, _run(model, prefix, image, jax.random.split(jax.random.key(1), 2))[0])
    # Per-example keys: an example's mask does not depend on the rest of the batch.
    np.testing.assert_allclose(_run(model, prefix[:1], image[:1], keys[:1])[0], a[:1], atol=1e-6)
    with pytest.raises(ValueError, match="deterministic"):
        model.prefill(prefix, model.init_cache(2))
    evaluation = nnx.view(model, deterministic=True)
    b = _run(evaluation, prefix, image, None)[0]
    np.testing.assert_array_equal(_run(evaluation, prefix, image, keys)[0], b)
    assert _differs(a, b)


def test_gradients_are_finite_and_reach_every_parameter(model):
    prefix, image, context, mask = _inputs(5, n=N)

    def loss(m):
        image_logits, prefix_logits = m(prefix, image[:, :-1], context=context, context_mask=mask)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(image_logits), image[..., None], -1)
        return nll.mean() + jax.nn.logsumexp(prefix_logits).mean()

    grads = jax.tree.leaves(nnx.state(nnx.jit(nnx.grad(loss))(model)))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert all(float(jnp.abs(g).sum()) > 0 for g in grads)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=10, num_heads=3), "divisible"),
        (dict(depth=0), "depth"),
        (dict(prefix_len=0), "prefix_len"),
        (dict(prefix_len=1, prefix_head=True), "prefix_head"),
        (dict(context_dim=0), "context_dim"),
        (dict(dropout=1.0), "dropout"),
        (dict(attention_impl="flash"), "attention_impl"),
        (dict(num_tokens=0), "num_tokens"),
    ],
)
def test_bad_configuration_is_an_error(kwargs, match):
    args = dict(vocab_size=V, num_tokens=N, prefix_vocab_size=PV, prefix_len=P)
    args |= dict(dim=16, depth=1, num_heads=2) | kwargs
    with pytest.raises(ValueError, match=match):
        TokenDecoder(**args, rngs=nnx.Rngs(0))


def test_bad_inputs_are_an_error(model):
    prefix, image, context, mask = _inputs(6, n=N)
    with pytest.raises(ValueError, match="at most"):
        model(prefix, image, context=context)  # all N tokens: the last is never an input
    with pytest.raises(ValueError, match="prefix_len=3"):
        model(prefix[:, :2], image[:, :2], context=context)
    with pytest.raises(ValueError, match="integer"):
        model(prefix, image[:, :2].astype(jnp.float32), context=context)
    with pytest.raises(ValueError, match="pass context"):
        model(prefix, image[:, :2])
    with pytest.raises(ValueError, match="context_mask"):
        model(prefix, image[:, :2], context=context, context_mask=mask[:, :2])
    with pytest.raises(ValueError, match="without context_dim"):
        _decoder(depth=1)(prefix, image[:, :2], context=context)
