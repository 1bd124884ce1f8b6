"""U-Net building blocks and the timestep embedding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.blocks import AttentionBlock, Downsample, ResBlock, Upsample, num_groups
from zoo.nn.embeddings import timestep_embedding


def RNGS() -> nnx.Rngs:  # noqa: N802 - reads like the nnx.Rngs it returns
    # rbg compiles much faster than threefry for the many parameter shapes.
    return nnx.Rngs(jax.random.key(0, impl="rbg"))


@pytest.mark.parametrize("channels,groups", [(128, 32), (64, 32), (48, 24), (16, 16), (3, 3)])
def test_num_groups(channels, groups):
    assert num_groups(channels) == groups


@pytest.mark.parametrize(
    "channels,groups", [(128, 32), (64, 16), (32, 8), (16, 4), (48, 12), (3, 1)]
)
def test_num_groups_keeps_a_minimum_group_size(channels, groups):
    assert num_groups(channels, min_group_size=4) == groups


def test_a_narrow_res_block_keeps_the_timestep_with_groups_of_four():
    """The timestep embedding is added per channel before norm2: with one channel per group
    (16 channels, 16 groups) the norm removes it exactly; with groups of 4 it survives."""
    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 16))
    t0, t1 = jax.random.normal(jax.random.key(1), (2, 1, 12))
    for size, changes in ((1, False), (4, True)):
        block = ResBlock(16, 16, temb_dim=12, min_group_size=size, rngs=RNGS())
        block.conv2.kernel.value = jax.random.normal(jax.random.key(2), block.conv2.kernel.shape)
        moved = float(jnp.max(jnp.abs(block(x, t0) - block(x, t1))))
        assert (moved > 1e-2) == changes, (size, moved)


def test_res_block_shapes_and_shortcut():
    block = ResBlock(8, 16, temb_dim=12, rngs=RNGS())
    x, temb = jnp.ones((2, 6, 6, 8)), jnp.ones((2, 12))
    assert block(x, temb).shape == (2, 6, 6, 16)
    assert block.shortcut is not None
    assert ResBlock(8, 8, rngs=RNGS()).shortcut is None


def test_blocks_are_identity_at_init():
    """Zero-initialised last layers (DDPM's init_scale=0) make each residual branch vanish."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 16)).astype(np.float32)
    temb = rng.standard_normal((2, 32)).astype(np.float32)
    np.testing.assert_array_equal(ResBlock(16, temb_dim=32, rngs=RNGS())(x, temb), x)
    np.testing.assert_array_equal(AttentionBlock(16, num_heads=2, rngs=RNGS())(x), x)
    # With a channel change the block starts as its 1x1 shortcut.
    wide = ResBlock(16, 32, temb_dim=32, rngs=RNGS())
    np.testing.assert_array_equal(wide(x, temb), wide.shortcut(x))


def test_res_block_dropout_needs_a_key_in_train_mode():
    block = ResBlock(8, dropout=0.5, rngs=RNGS())
    x = jnp.ones((1, 4, 4, 8))
    with pytest.raises(ValueError, match="dropout_key"):
        block(x)
    assert block(x, dropout_key=jax.random.key(0)).shape == x.shape
    assert nnx.view(block, deterministic=True)(x).shape == x.shape


def test_resampling_shapes():
    x = jnp.ones((2, 8, 8, 4))
    assert Downsample(4, rngs=RNGS())(x).shape == (2, 4, 4, 4)
    assert Upsample(4, rngs=RNGS())(x).shape == (2, 16, 16, 4)


def test_bfloat16_compute_keeps_float32_params():
    block = ResBlock(8, 16, temb_dim=4, dtype=jnp.bfloat16, rngs=RNGS())
    out = block(jnp.ones((1, 4, 4, 8)), jnp.ones((1, 4)))
    assert out.dtype == jnp.bfloat16
    params = jax.tree.leaves(nnx.state(block, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)


def test_timestep_embedding_values():
    emb = timestep_embedding(jnp.array([0, 1, 1000]), 6)
    assert emb.shape == (3, 6) and emb.dtype == jnp.float32
    freqs = 10_000.0 ** -(np.arange(3) / 2)  # 1, 1e-2, 1e-4
    expected = np.concatenate(
        [np.sin(np.outer([0, 1, 1000], freqs)), np.cos(np.outer([0, 1, 1000], freqs))], axis=1
    )
    np.testing.assert_allclose(emb, expected, atol=1e-4)
    np.testing.assert_array_equal(emb[0], [0, 0, 0, 1, 1, 1])


def test_timestep_embedding_float_and_odd_dim():
    emb = timestep_embedding(jnp.array([0.5, 2.25]), 5)
    assert emb.shape == (2, 5)
    np.testing.assert_array_equal(emb[:, -1], 0)  # odd dim: zero padded
    np.testing.assert_allclose(emb[0, 0], math.sin(0.5), rtol=1e-6)
