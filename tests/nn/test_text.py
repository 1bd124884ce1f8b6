"""The text encoder: shapes, padding invariance, finite gradients, dropout and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.text import TextEncoder

TOKENS = np.array([[2, 5, 7, 3, 0], [4, 4, 0, 0, 0], [0, 0, 0, 0, 0]], np.int32)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(vocab_size=10, max_len=8, dim=16, depth=2, num_heads=2, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def encode(encoder):
    return nnx.jit(lambda model, tokens: model(tokens))


def test_output_shapes_mask_and_pooling(encoder, encode):
    local, global_, mask = encode(encoder, jnp.asarray(TOKENS))
    assert local.shape == (3, 5, 16) and global_.shape == (3, 16) and mask.shape == (3, 5)
    assert local.dtype == global_.dtype == jnp.float32 and mask.dtype == jnp.bool_
    np.testing.assert_array_equal(mask, TOKENS != 0)
    np.testing.assert_array_equal(local[~np.asarray(mask)], 0.0)
    np.testing.assert_allclose(global_[0], local[0, :4].mean(0), atol=1e-6)
    np.testing.assert_allclose(global_[1], local[1, :2].mean(0), atol=1e-6)
    np.testing.assert_array_equal(global_[2], 0.0)  # all padding: a zero caption vector
    assert np.isfinite(np.asarray(local)).all()
    assert np.abs(np.asarray(global_[0] - global_[1])).max() > 1e-3  # captions differ


def test_padding_does_not_change_real_tokens(encoder, encode):
    local, global_, _ = encode(encoder, jnp.asarray(TOKENS[:2, :4]))  # trailing pad dropped
    longer = np.pad(TOKENS[:2], ((0, 0), (0, 3)))  # three more padding tokens, L = 8
    local_l, global_l, _ = encode(encoder, jnp.asarray(longer))
    np.testing.assert_allclose(global_l, global_, atol=1e-5)
    np.testing.assert_allclose(local_l[:, :4], local, atol=1e-5)
    # Without the key mask, padding would leak in: a padded position is not a no-op input.
    other = TOKENS[:2].copy()
    other[1, 2] = 9
    assert np.abs(np.asarray(encode(encoder, jnp.asarray(other))[1][1] - global_[1])).max() > 1e-3


def test_tiny_encoder_gradient_is_finite_and_nonzero():
    model = TextEncoder(vocab_size=6, max_len=4, dim=8, depth=1, num_heads=2, rngs=nnx.Rngs(1))
    tokens = jnp.array([[2, 3, 0, 0], [5, 4, 3, 2]], jnp.int32)

    def loss(m):
        local, global_, _ = m(tokens)
        return (local**2).mean() + global_.sum()

    grads = nnx.grad(loss)(model)
    leaves = jax.tree.leaves(nnx.state(grads))
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    token_grad = np.asarray(grads.token_embed.embedding[...])
    np.testing.assert_array_equal(token_grad[1], 0.0)  # id 1 is not in the batch


def test_dropout_needs_a_key_in_train_mode_only():
    model = TextEncoder(6, 4, 8, 1, 2, dropout=0.5, rngs=nnx.Rngs(0))
    tokens = jnp.array([[2, 3, 4, 0]], jnp.int32)
    with pytest.raises(ValueError, match="dropout_key"):
        model(tokens)
    a = model(tokens, dropout_key=jax.random.key(0))[1]
    b = model(tokens, dropout_key=jax.random.key(1))[1]
    assert np.abs(np.asarray(a - b)).max() > 1e-4
    evaluation = nnx.view(model, deterministic=True)
    np.testing.assert_array_equal(evaluation(tokens)[1], evaluation(tokens)[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=10, num_heads=3), "divisible"),
        (dict(depth=0), "depth"),
        (dict(vocab_size=1), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_configuration_is_an_error(kwargs, match):
    args = dict(vocab_size=6, max_len=4, dim=8, depth=1, num_heads=2) | kwargs
    with pytest.raises(ValueError, match=match):
        TextEncoder(**args, rngs=nnx.Rngs(0))


def test_bad_tokens_are_an_error(encoder):
    with pytest.raises(ValueError, match="max_len=8"):
        encoder(jnp.zeros((1, 9), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        encoder(jnp.zeros((1, 3), jnp.float32))
