"""The spatial transformer: identity at init, attention to the context and its mask, layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.diffusion.unet import UNet
from zoo.nn.spatial_transformer import SpatialTransformer

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 4, 16)).astype(np.float32)
CONTEXT = RNG.standard_normal((2, 5, 12)).astype(np.float32)


def _block(**kw) -> SpatialTransformer:
    kw = {"num_heads": 4, "context_dim": 12, **kw}
    return SpatialTransformer(16, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), **kw)


def _randomized(module):
    """Every parameter perturbed: at init the zero proj_out hides everything behind it."""
    rng = np.random.default_rng(1)
    params = nnx.state(module, nnx.Param)
    nnx.update(module, jax.tree.map(lambda p: p + 0.2 * rng.standard_normal(p.shape), params))
    return module


def test_identity_at_init_with_zero_proj_out():
    block = _block()
    np.testing.assert_array_equal(block(X, CONTEXT), X)
    assert not np.any(block.proj_out.kernel[...])


def test_output_depends_on_every_context_token_and_the_mask_hides_tokens():
    block = _randomized(_block())
    out = block(X, CONTEXT)
    assert out.shape == X.shape and not np.allclose(out, X)
    for token in range(CONTEXT.shape[1]):
        changed = CONTEXT.copy()
        changed[:, token] += 1.0
        assert np.abs(block(X, changed) - out).max() > 1e-3, f"token {token} is ignored"
    # Tokens 3 and 4 masked out: changing them changes nothing, not even in the last bit.
    mask = np.array([[True, True, True, False, False]] * 2)
    masked = block(X, CONTEXT, mask)
    changed = CONTEXT.copy()
    changed[:, 3:] = RNG.standard_normal(changed[:, 3:].shape)
    np.testing.assert_array_equal(block(X, changed, mask), masked)
    # ... and the mask is per example: masking example 1's tokens leaves example 0 alone.
    per_example = np.array([[True] * 5, [True, True, True, False, False]])
    np.testing.assert_allclose(block(X, CONTEXT, per_example)[0], out[0], atol=1e-6)


def test_linear_projection_is_the_same_function_as_the_1x1_conv():
    conv_block = _randomized(_block())
    linear_block = _block(linear_projection=True)
    conv_state = nnx.to_flat_state(nnx.state(conv_block, nnx.Param))
    linear_params = dict(nnx.to_flat_state(nnx.state(linear_block, nnx.Param)))
    flat = []
    for path, var in conv_state:
        value = var.get_value()
        if path[0] in ("proj_in", "proj_out") and path[-1] == "kernel":
            value = value[0, 0]  # [1, 1, in, out] -> [in, out]
        flat.append((path, linear_params[path].replace(value)))
    nnx.update(linear_block, nnx.from_flat_state(flat))
    np.testing.assert_allclose(linear_block(X, CONTEXT), conv_block(X, CONTEXT), atol=1e-5)


def test_parameter_layout_of_one_sd_block():
    """SD 1.x's first-level transformer (320 channels, 768 context): diffusers' shapes,
    2,546,240 parameters (GroupNorm, proj_in/out 1x1 convs, q/k/v without bias, GEGLU)."""
    block = nnx.eval_shape(
        lambda: SpatialTransformer(320, num_heads=8, context_dim=768, rngs=nnx.Rngs(0))
    )
    params = nnx.state(block, nnx.Param)
    assert sum(p.size for p in jax.tree.leaves(params)) == 2_546_240
    layer = block.transformer_blocks[0]
    assert layer.attn1.query.bias is None and layer.attn2.key.kernel.shape == (768, 320)
    assert layer.ff.proj.kernel.shape == (320, 2560) and layer.ff.out.kernel.shape == (1280, 320)
    assert block.proj_in.kernel.shape == (1, 1, 320, 320)


def test_context_is_required_exactly_when_built_with_context_dim():
    with pytest.raises(ValueError, match="pass context"):
        _block()(X)
    self_only = _block(context_dim=None)
    assert self_only.transformer_blocks[0].attn2 is None
    np.testing.assert_array_equal(self_only(X), X)
    with pytest.raises(ValueError, match="built without context_dim"):
        self_only(X, CONTEXT)


def test_unet_with_spatial_transformers_reads_the_context():
    unet = UNet(
        in_channels=4,
        out_channels=4,
        resolution=8,
        ch=16,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        dropout=0.0,
        context_dim=12,
        num_heads=4,
        attention_block="spatial_transformer",
        pooled_context=False,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0.0,
        rngs=nnx.Rngs(jax.random.key(0, impl="rbg")),
    )
    assert unet.context_emb is None and isinstance(unet.mid_attn, SpatialTransformer)
    assert len(unet.down[1].attns) == 0 and unet.norm_out.epsilon == 1e-5
    _randomized(unet)
    x = RNG.standard_normal((2, 8, 8, 4)).astype(np.float32)
    t = jnp.array([3, 900])
    out = unet(x, t, context=CONTEXT)
    assert out.shape == (2, 8, 8, 4) and np.all(np.isfinite(out))
    assert np.abs(unet(x, t, context=CONTEXT + 1.0) - out).max() > 1e-3
    with pytest.raises(ValueError, match="pass context"):
        unet(x, t)
