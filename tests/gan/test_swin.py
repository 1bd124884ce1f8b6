"""Swin windows: partition/merge, shifted-window masks, relative position bias, double attention."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.gan.swin import (
    DoubleWindowAttention,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_merge,
    window_partition,
)


def test_partition_merge_round_trip_and_layout():
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 3)).astype(np.float32)
    windows = window_partition(x, 2)
    assert windows.shape == (2 * 2 * 3, 4, 3)
    # Window 4 of image 1 is window row 1, column 1: rows 2-3, columns 2-3, row-major.
    np.testing.assert_array_equal(windows[6 + 4], x[1, 2:4, 2:4].reshape(4, 3))
    np.testing.assert_array_equal(window_merge(windows, 2, 4, 6), x)


def test_partition_rejects_windows_that_do_not_tile():
    with pytest.raises(ValueError, match="does not tile"):
        window_partition(jnp.zeros((1, 6, 6, 1)), 4)


def _brute_force_mask(size: int, window: int, shift: int) -> np.ndarray:
    """Mask from first principles: roll the map, then ask, per pair of tokens in one window,
    whether their source pixels wrapped around the border on the same axes."""
    src = [((i + shift) % size, (j + shift) % size) for i in range(size) for j in range(size)]
    # After the roll by -shift, position p holds source pixel src[p]; on each axis it wrapped
    # around the border iff its source coordinate is < shift.
    wrapped = {p: (src[p][0] < shift, src[p][1] < shift) for p in range(size * size)}
    n = size // window
    masks = []
    for wi, wj in itertools.product(range(n), range(n)):
        tokens = [
            (wi * window + a) * size + (wj * window + b)
            for a, b in itertools.product(range(window), range(window))
        ]
        masks.append([[wrapped[p] == wrapped[q] for q in tokens] for p in tokens])
    return np.array(masks)


@pytest.mark.parametrize("size,window,shift", [(4, 2, 1), (8, 4, 2), (8, 4, 1), (6, 3, 1)])
def test_shifted_window_mask_matches_region_labels(size, window, shift):
    mask = shifted_window_mask(size, size, window, shift)
    np.testing.assert_array_equal(mask, _brute_force_mask(size, window, shift))


def test_shifted_window_mask_small_grid_by_hand():
    """4x4 map, window 2, shift 1: the last window holds 4 tokens from 4 different corners."""
    mask = shifted_window_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    assert mask[0].all()  # the top-left window of the rolled map did not wrap
    np.testing.assert_array_equal(mask[3], np.eye(4, dtype=bool))  # every token isolated
    # Top-right window: columns 2 (not wrapped) and 3 (wrapped) are separated.
    np.testing.assert_array_equal(mask[1], np.array([[1, 0, 1, 0], [0, 1, 0, 1]] * 2, bool))


def test_unshifted_or_whole_map_window_masks_nothing():
    assert shifted_window_mask(4, 4, 4, 0).all()
    assert shifted_window_mask(8, 8, 4, 0).all()


def test_relative_position_index():
    idx = relative_position_index(2)
    # Tokens (0,0),(0,1),(1,0),(1,1); offset (dy, dx) -> (dy + 1) * 3 + (dx + 1).
    assert idx[0, 0] == 4 and idx[0, 3] == 0 and idx[3, 0] == 8 and idx[1, 2] == 2
    assert len(np.unique(relative_position_index(3))) == 25


def test_window_attention_masked_keys_get_no_weight():
    """A value change at a masked-out key leaves the query's output unchanged."""
    attn = WindowAttention(4, 2, 2, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((4, 4, 4)).astype(np.float32) for _ in range(3))
    mask = shifted_window_mask(4, 4, 2, 1)
    out = attn(q, k, v, mask)
    v2 = v.copy()
    v2[3, 1] += 10.0  # window 3, key 1: isolated from query 0 by the mask
    out2 = attn(q, k, v2, mask)
    np.testing.assert_allclose(out2[3, 0], out[3, 0], atol=1e-6)
    assert not np.allclose(out2[3, 1], out[3, 1])


def _plain_window_attention(double: DoubleWindowAttention, x: jax.Array) -> jax.Array:
    """Window attention with all heads on the regular windows and the two halves' bias tables
    side by side, reusing double's projections."""
    b, h, w, c = x.shape
    heads = 2 * double.attn[0].num_heads
    plain = WindowAttention(c, double.window, heads, rngs=nnx.Rngs(1))
    plain.bias_table[...] = jnp.concatenate([a.bias_table[...] for a in double.attn], axis=-1)
    q, k, v = (window_partition(t, double.window) for t in jnp.split(double.qkv(x), 3, axis=-1))
    return double.proj(window_merge(plain(q, k, v), double.window, h, w))


def test_double_attention_without_shift_is_plain_window_attention():
    double = DoubleWindowAttention(16, 8, 4, 4, shifts=(0, 0), rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 16)), jnp.float32)
    np.testing.assert_allclose(double(x), _plain_window_attention(double, x), atol=1e-5)


def test_double_attention_with_shift_differs_and_is_local():
    double = DoubleWindowAttention(16, 8, 4, 4, rngs=nnx.Rngs(0))
    assert double.shifts == (0, 2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 16)), jnp.float32)
    out = double(x)
    assert not np.allclose(out, _plain_window_attention(double, x), atol=1e-3)
    # Changing token (0, 0) can reach (0..3, 0..3) through the regular windows and the
    # shifted window around it (rows/cols 6,7 wrapped are masked off), never (5, 5).
    x2 = x.at[0, 0, 0].add(5.0)
    delta = np.abs(np.asarray(double(x2) - out)).sum(-1)[0]
    assert delta[5, 5] < 1e-6 and delta[1, 1] > 1e-4


def test_double_attention_whole_map_window_drops_shift():
    double = DoubleWindowAttention(8, 4, 8, 4, rngs=nnx.Rngs(0))
    assert double.window == 4 and double.shifts == (0, 0)
    out = double(jnp.ones((1, 4, 4, 8)))
    assert out.shape == (1, 4, 4, 8) and np.isfinite(out).all()


def test_double_attention_rejects_odd_heads():
    with pytest.raises(ValueError, match="even"):
        DoubleWindowAttention(8, 8, 4, 3, rngs=nnx.Rngs(0))
