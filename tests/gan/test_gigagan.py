"""GigaGAN: pyramid shapes, text and z dependence, adaptive kernels, truncation, D, gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.data.text import SHAPES_MAX_LEN, shapes_tokenizer
from zoo.engine.objective import Context
from zoo.engine.rng import example_keys
from zoo.gan import gigagan
from zoo.gan.gigagan_layers import L2SelfAttention, caption_tokens
from zoo.nn.modulated import modulated_conv

B, SIZE, Z = 2, 16, 8
CAPTIONS = ["a red circle at the top left", "a blue square at the center"]
OTHER = ["a green triangle at the bottom right", "a white circle at the top"]
TINY_NET = dict(
    z_dim=Z,
    w_dim=16,
    mapping_layers=1,
    channel_base=256,
    channel_max=16,
    num_kernels=3,
    attn_resolutions=(8,),
    num_heads=2,
    text_dim=16,
    text_depth=1,
    text_heads=2,
)


def _config(image_size=SIZE, **net):
    cfg = ml_collections.ConfigDict(
        dict(data=dict(image_size=image_size, channels=3), net=gigagan.net_config())
    )
    cfg.net.update({**TINY_NET, **net})
    return cfg


def _tokens(captions):
    return jnp.asarray(shapes_tokenizer().encode(captions, SHAPES_MAX_LEN))


# Jitted entry points: one compilation each serves every call below (eager first calls of the
# generator cost several times more on CPU, one small XLA program per op and shape).
@nnx.jit
def _generate(g, z, tokens, psi):
    return g(z, {"tokens": tokens}, truncation=psi)


@nnx.jit
def _generate_noisy(g, z, tokens, key):
    return g(z, {"tokens": tokens}, noise_key=key)


@nnx.jit
def _map_then_synthesize(g, z, tokens, other_tokens):
    """Styles from (z, tokens), then synthesis captioned by tokens and by other_tokens."""
    w = g.mapping(z, {"tokens": tokens})
    ws = jnp.broadcast_to(w[:, None], (w.shape[0], g.num_ws, g.w_dim))
    return g.synthesis(ws, {"tokens": tokens}), g.synthesis(ws, {"tokens": other_tokens})


@nnx.jit
def _discriminate(d, images, tokens):
    return d(images, {"tokens": tokens})


@pytest.fixture(scope="module")
def nets():
    cfg = _config()
    # rbg keys initialise the many small parameters far faster than threefry on CPU.
    return gigagan.build_networks(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


@pytest.fixture(scope="module")
def z():
    return jax.random.normal(jax.random.key(1), (B, Z))


def _differ(a, b):
    return float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_output_scales_and_discriminator(nets, z):
    g, d = nets
    assert g.num_ws == 1 + 3 * 2 and g.w_avg.shape == (16,)
    images = _generate(g, z, _tokens(CAPTIONS), 1.0)
    assert isinstance(images, list)
    assert [x.shape for x in images] == [(B, 8, 8, 3), (B, 16, 16, 3)]
    reals = gigagan.image_pyramid(jax.random.uniform(jax.random.key(2), (B, SIZE, SIZE, 3)), 2)
    for pyramid in (images, reals):  # the generated list and a real pyramid
        logits = _discriminate(d, pyramid, _tokens(CAPTIONS))
        assert logits.shape == (B,) and logits.dtype == jnp.float32
        assert np.all(np.isfinite(logits))
    # A bare full-size batch is turned into its pyramid.
    np.testing.assert_allclose(
        _discriminate(d, reals[-1], _tokens(CAPTIONS)),
        _discriminate(d, reals, _tokens(CAPTIONS)),
        atol=1e-5,
    )
    # Matching-aware loss: any caption is accepted, and the caption changes the logit.
    assert _differ(
        _discriminate(d, reals, _tokens(CAPTIONS)), _discriminate(d, reals, _tokens(OTHER))
    )
    with pytest.raises(ValueError, match="scales"):
        d(images[-1:], {"tokens": _tokens(CAPTIONS)})


def test_caption_and_z_change_the_image(nets, z):
    g, _ = nets
    base = _generate(g, z, _tokens(CAPTIONS), 1.0)[-1]
    assert _differ(base, _generate(g, z, _tokens(OTHER), 1.0)[-1])
    assert _differ(base, _generate(g, z[::-1], _tokens(CAPTIONS), 1.0)[-1])
    # With the styles fixed the caption still acts, through cross-attention to t_local.
    same, other = _map_then_synthesize(g, z, _tokens(CAPTIONS), _tokens(OTHER))
    np.testing.assert_allclose(same[-1], base, atol=1e-5)
    assert _differ(same[-1], other[-1])


def test_truncation_zero_removes_z(nets, z):
    g, _ = nets
    g.w_avg[...] = jax.random.normal(jax.random.key(3), (g.w_dim,))
    try:
        tokens = _tokens([CAPTIONS[0]] * B)
        a = _generate(g, z, tokens, 0.0)
        b = _generate(g, jax.random.normal(jax.random.key(4), (B, Z)), tokens, 0.0)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
        np.testing.assert_allclose(a[-1][0], a[-1][1], atol=1e-5)  # same caption, z gone
        assert _differ(_generate(g, z, tokens, 1.0)[-1], a[-1])
    finally:
        g.w_avg[...] = jnp.zeros((g.w_dim,))


def test_one_hot_kernel_selection_is_a_plain_conv(nets):
    """Logits that pick kernel j make the adaptive conv exactly the modulated conv of kernel j."""
    g, _ = nets
    layer = g.blocks[0].conv1.conv  # 8x8, 3x3, a bank of num_kernels=3 kernels
    assert layer.weight.shape[0] == 3
    x = jax.random.normal(jax.random.key(5), (B, 8, 8, layer.weight.shape[3]))
    w = jax.random.normal(jax.random.key(6), (B, g.w_dim))
    saved = nnx.state(layer.kernel_select)
    try:
        layer.kernel_select.kernel[...] = jnp.zeros_like(layer.kernel_select.kernel[...])
        for j in range(3):
            layer.kernel_select.bias[...] = 1e4 * jax.nn.one_hot(j, 3)  # softmax -> exactly e_j
            plain = modulated_conv(
                x, layer.weight[...][j] * layer.weight_gain, layer.affine(w)
            )  # shared-kernel path of modulated_conv: a different computation
            np.testing.assert_allclose(layer(x, w), plain, rtol=1e-4, atol=1e-4)
        # Mixed logits differ from every single kernel: the bank is really used.
        layer.kernel_select.bias[...] = jnp.zeros((3,))
        assert _differ(layer(x, w), plain)
    finally:
        nnx.update(layer.kernel_select, saved)


def test_noise_key(nets, z):
    g, _ = nets
    tokens = _tokens(CAPTIONS)
    layer = g.blocks[-1].conv1.noise
    layer.strength[...] = jnp.asarray(0.5)  # StyleGAN2 starts at 0: noise would be invisible
    try:
        a = _generate_noisy(g, z, tokens, jax.random.key(7))[-1]
        assert _differ(a, _generate_noisy(g, z, tokens, jax.random.key(8))[-1])
        assert _differ(a, _generate(g, z, tokens, 1.0)[-1])
        np.testing.assert_array_equal(
            _generate(g, z, tokens, 1.0)[-1], _generate(g, z, tokens, 1.0)[-1]
        )  # None: deterministic
    finally:
        layer.strength[...] = jnp.asarray(0.0)


def test_noise_is_per_sample(nets):
    """With the engine's per-example keys, a batch of 4 equals the same examples as two
    batches of 2 (how jit, pmap and microbatches split it): no noise draw is batch-shaped."""
    g, _ = nets
    layers = [g.conv4.noise] + [c.noise for b in g.blocks for c in (b.conv0, b.conv1)]
    z4, tokens = jax.random.normal(jax.random.key(9), (4, Z)), _tokens(CAPTIONS + OTHER)

    def keys(ids):
        ctx = Context(jax.random.key(3), jnp.int32(0), jnp.int32(0), jnp.asarray(ids, jnp.int32))
        return example_keys(ctx)

    for layer in layers:
        layer.strength[...] = jnp.asarray(0.5)
    try:
        whole = _generate_noisy(g, z4, tokens, keys([0, 1, 2, 3]))
        halves = [
            _generate_noisy(g, z4[i : i + 2], tokens[i : i + 2], keys([i, i + 1])) for i in (0, 2)
        ]
        for scale, image in enumerate(whole):
            parts = jnp.concatenate([h[scale] for h in halves])
            np.testing.assert_allclose(image, parts, rtol=1e-5, atol=1e-5)
        assert _differ(whole[-1], _generate(g, z4, tokens, 1.0)[-1])  # the noise is on
    finally:
        for layer in layers:
            layer.strength[...] = jnp.asarray(0.0)


def test_gradients_finite(nets, z):
    g, d = nets
    tokens = _tokens(CAPTIONS)

    @nnx.jit
    def grads(g, d):
        def loss(g, d):  # non-saturating G loss through D: reaches every G and D parameter
            return jax.nn.softplus(-d(g(z, {"tokens": tokens}), {"tokens": tokens})).mean()

        return nnx.grad(loss, argnums=(0, 1))(g, d)

    for module_grads in grads(g, d):
        leaves = jax.tree.leaves(module_grads)
        assert leaves and all(np.all(np.isfinite(x)) for x in leaves)
        assert sum(float(jnp.abs(x).sum()) for x in leaves) > 0


def test_image_pyramid_box_averages():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    pyr = gigagan.image_pyramid(jnp.asarray(x), 3)
    assert [p.shape for p in pyr] == [(2, 2, 2, 3), (2, 4, 4, 3), (2, 8, 8, 3)]
    np.testing.assert_allclose(pyr[-1], x)
    np.testing.assert_allclose(pyr[1][:, 1, 2], x[:, 2:4, 4:6].mean(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(pyr[0][:, 0, 1], x[:, :4, 4:].mean(axis=(1, 2)), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        gigagan.image_pyramid(jnp.zeros((1, 12, 12, 3)), 4)


@pytest.mark.parametrize(
    "image_size, net, match",
    [
        (SIZE, dict(bogus=1), "unknown"),
        (SIZE, dict(attn_resolutions=(32,)), "attn_resolutions"),
        (24, {}, "power-of-two"),
        (SIZE, dict(num_kernels=0), "num_kernels"),
    ],
)
def test_invalid_config_raises(image_size, net, match):
    with pytest.raises(ValueError, match=match):
        gigagan.build_networks(_config(image_size, **net), rngs=nnx.Rngs(0))


def test_net_config_defaults_build_for_shapes():
    cfg = ml_collections.ConfigDict(
        dict(data=dict(image_size=32, channels=3), net=gigagan.net_config())
    )
    g, d = nnx.eval_shape(lambda: gigagan.build_networks(cfg, rngs=nnx.Rngs(0)))
    assert g.num_ws == 1 + 3 * 3 and d.num_scales == 3
    assert g.blocks[0].conv0.conv.num_kernels > 1  # sample-adaptive kernel selection is on
    cfg.net.update(dict(vocab_size=40, max_len=12))  # explicit vocabulary beats the shapes one
    g, d = nnx.eval_shape(lambda: gigagan.build_networks(cfg, rngs=nnx.Rngs(0)))
    assert (g.text.vocab_size, g.text.max_len, d.text.vocab_size) == (40, 12, 40)


def test_l2_self_attention_matches_distance_softmax():
    """softmax(-||q_i - q_j||^2 / sqrt(d)) v with tied query/key projections (ViTGAN)."""
    attn = L2SelfAttention(8, 2, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    q = np.asarray(attn.qk(x), np.float64).reshape(2, 5, 2, 4)
    v = np.asarray(attn.value(x), np.float64).reshape(2, 5, 2, 4)
    dist = ((q[:, :, None] - q[:, None, :]) ** 2).sum(-1)  # [B, i, j, h]
    logits = -dist / 2.0  # sqrt(head dim 4)
    p = np.exp(logits - logits.max(2, keepdims=True))
    p /= p.sum(2, keepdims=True)
    heads = np.einsum("bijh,bjhd->bihd", p, v).reshape(2, 5, 8)
    np.testing.assert_allclose(attn(x), attn.out(jnp.asarray(heads, jnp.float32)), atol=1e-4)


def test_empty_caption_when_cond_is_none():
    tokens = caption_tokens(None, 3)
    assert tokens.shape == (3, 1) and not np.any(tokens)  # all padding: the empty caption
    with pytest.raises(ValueError, match="tokens"):
        caption_tokens({"tokens": jnp.zeros((2, 7), jnp.int32)}, 3)
