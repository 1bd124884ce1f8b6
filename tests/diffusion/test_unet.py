"""The DDPM U-Net: parameter counts of known models, shapes, modes, validation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tests.diffusion.helpers import perturb_params
from zoo.diffusion.config import ddpm_config
from zoo.diffusion.unet import UNet, unet_from_config
from zoo.engine import precision

TINY = dict(
    in_channels=3,
    out_channels=3,
    resolution=8,
    ch=16,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    dropout=0.1,
)


def _rngs(seed: int = 0) -> nnx.Rngs:
    # The rbg generator compiles far faster than threefry for the dozens of
    # parameter shapes (eager init of the tiny U-Net: ~3 s instead of ~10 s).
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _num_params(**kw) -> int:
    # eval_shape builds abstract parameters: no allocation, no initialisation.
    model = nnx.eval_shape(lambda: UNet(in_channels=3, out_channels=3, rngs=nnx.Rngs(0), **kw))
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_param_count_ddpm_cifar10():
    """Ho et al. 2020, appendix B: 35.7 M parameters for the CIFAR-10 model."""
    n = _num_params(resolution=32, ch=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,))
    assert n == pytest.approx(35.7e6, rel=0.01)


def test_param_count_benchmark_config():
    """The shapes of diffusers' UNet2DModel((64, 128, 128), Attn at the 16x16 level, 2 layers)."""
    n = _num_params(resolution=32, ch=64, ch_mult=(1, 2, 2), attn_resolutions=(16,))
    assert n == pytest.approx(6.47e6, rel=0.01)


def _randomized(model: UNet) -> UNet:
    """Perturbs every parameter: at init the zero last layers make the output exactly 0."""
    rng = np.random.default_rng(0)  # numpy: no per-shape compilation of a jax sampler
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape), params))
    return model


@nnx.jit
def _apply(model, x, t, y=None, dropout_key=None):
    return model(x, t, y, dropout_key=dropout_key)


X = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
T = jnp.array([0, 999], jnp.int32)


def test_forward_shape_and_zero_output_at_init():
    model = UNet(**TINY, rngs=_rngs())
    eval_model = nnx.view(model, deterministic=True, raise_if_not_found=False)
    out = _apply(eval_model, X, T)
    assert out.shape == (2, 8, 8, 3) and out.dtype == jnp.float32
    assert not out.any()  # conv_out is zero-initialised (DDPM init_scale=0)


def test_train_and_eval_modes():
    model = _randomized(UNet(**TINY, rngs=_rngs()))
    eval_model = nnx.view(model, deterministic=True, raise_if_not_found=False)
    first, second = _apply(eval_model, X, T), _apply(eval_model, X, T)
    np.testing.assert_array_equal(first, second)
    key_a, key_b = jax.random.key(1), jax.random.key(2)
    train_a = _apply(model, X, T, dropout_key=key_a)
    np.testing.assert_array_equal(train_a, _apply(model, X, T, dropout_key=key_a))
    assert not np.allclose(train_a, _apply(model, X, T, dropout_key=key_b))
    assert not np.allclose(train_a, first)
    with pytest.raises(ValueError, match="dropout_key"):
        _apply(model, X, T)


def test_class_conditional():
    model = _randomized(UNet(**TINY, num_classes=3, rngs=_rngs()))
    model = nnx.view(model, deterministic=True, raise_if_not_found=False)
    cat, dog, none = (_apply(model, X, T, jnp.full((2,), c)) for c in (0, 1, 3))
    assert cat.shape == (2, 8, 8, 3)
    assert not np.allclose(cat, dog)
    np.testing.assert_array_equal(none, _apply(model, X, T))  # y=None is the "no label" token


def test_attention_impls_agree_in_the_unet():
    kw = TINY | dict(dropout=0.0, attention_chunk=5)  # 16 tokens in chunks of 5
    full = _randomized(UNet(**kw, rngs=_rngs()))
    chunked = _randomized(UNet(**kw, attention="chunked", rngs=_rngs()))
    t = jnp.array([3.5, 700.0])  # float timesteps are accepted too
    np.testing.assert_allclose(_apply(chunked, X, t), _apply(full, X, t), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # two U-Nets differentiated: 36 s beside a sweep on 2 cores
def test_remat_gives_the_same_output_and_gradients():
    """unet.remat recomputes the blocks in the backward pass: the same numbers (dropout on,
    text context attended), with the blocks behind remat in the traced gradient; and the
    rematerialised U-Net runs inside a sampler's scan."""
    kw = TINY | dict(context_dim=4, pooled_context=False)
    context = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 4)), jnp.float32)
    key = jax.random.key(7)
    results = []
    for remat in (False, True):
        graph, params = nnx.split(_randomized(UNet(**kw, remat=remat, rngs=_rngs())))

        def loss(p, graph=graph):
            out = nnx.merge(graph, p)(X, T, context=context, dropout_key=key)
            return jnp.mean(out**2)

        results.append(jax.value_and_grad(loss)(params))
        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
        assert ("remat" in jaxpr) == remat
    # Inside a scan, as the samplers run it (a write-back of the blocks' state failed there).
    sampler_view = nnx.view(nnx.merge(graph, params), deterministic=True, raise_if_not_found=False)
    steps, _ = jax.lax.scan(lambda x, _: (sampler_view(x, T, context=context), None), X, length=2)
    assert np.isfinite(np.asarray(steps)).all()
    (loss0, grads0), (loss1, grads1) = results
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_image_size_raises():
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet(**TINY | dict(resolution=10, ch_mult=(1, 2, 2)), rngs=_rngs())


def test_under_bfloat16_parameters_and_output_stay_float32():
    cfg = ml_collections.ConfigDict(
        dict(
            ch=16,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(4,),
            mid_attention=False,
            dropout=0.0,
            num_heads=2,
            attention="dot_product",
            attention_chunk=64,
        )
    )
    model = unet_from_config(cfg, image_size=8, channels=3, num_classes=10, rngs=_rngs())
    precision.with_compute_dtype(model, jnp.bfloat16)  # what config.precision does
    assert model.mid_attn is None and model.label_emb is not None
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    out = _apply(model, X, T, jnp.array([1, 10]))
    assert out.shape == (2, 8, 8, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("min_group_size,sees_t", [(1, False), (4, True)])
def test_a_narrow_unet_sees_the_timestep_only_with_groups_of_several_channels(
    min_group_size, sees_t
):
    """ch 16, ch_mult (1, 2): every GroupNorm of DDPM's rule (32 groups) has one channel per
    group and normalises the per-channel timestep embedding away, so the output did not
    depend on t (the ``:tiny`` diffusion configs); the diffusion configs now set
    ``unet.min_group_size = 4``."""
    cfg = ddpm_config().unet
    assert cfg.min_group_size == 4  # the configs' default
    cfg.update(dict(ch=16, ch_mult=(1, 2), attn_resolutions=(), min_group_size=min_group_size))
    net = unet_from_config(cfg, image_size=8, channels=3, rngs=nnx.Rngs(0))
    perturb_params(net, 0.1)
    net.eval()
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    early, late = (net(x, jnp.full((2,), t, jnp.int32)) for t in (0, 900))
    moved = float(jnp.max(jnp.abs(early - late)) / jnp.max(jnp.abs(early)))
    assert (moved > 1e-3) == sees_t, moved
