"""Per-example dropout: the mask of an example depends on its key only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.nn.dropout import dropout, fold_in


def test_masks_do_not_depend_on_how_the_batch_is_split():
    x = jnp.ones((6, 5, 4))
    keys = jax.random.split(jax.random.key(0), 6)
    whole = dropout(x, 0.5, keys)
    parts = jnp.concatenate([dropout(x[:2], 0.5, keys[:2]), dropout(x[2:], 0.5, keys[2:])])
    np.testing.assert_array_equal(whole, parts)
    # one key for the whole batch draws a mask of the batch's shape: another split differs
    key = jax.random.key(0)
    shared = jnp.concatenate([dropout(x[:2], 0.5, key), dropout(x[2:], 0.5, key)])
    assert not np.array_equal(dropout(x, 0.5, key), shared)


def test_rate_and_scale():
    x = jnp.ones((4000, 8))
    y = np.asarray(dropout(x, 0.25, jax.random.split(jax.random.key(1), 4000)))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert dropout(x, 0.0, jax.random.key(0)) is x


def test_fold_in_keeps_one_key_per_example():
    keys = jax.random.split(jax.random.key(2), 3)
    folded = fold_in(keys, 7)
    assert folded.shape == (3,)
    for k, f in zip(keys, folded, strict=True):
        assert jnp.array_equal(
            jax.random.key_data(jax.random.fold_in(k, 7)), jax.random.key_data(f)
        )


def test_wrong_number_of_keys():
    with pytest.raises(ValueError, match="3 dropout keys for a batch of 4"):
        dropout(jnp.ones((4, 2)), 0.5, jax.random.split(jax.random.key(0), 3))
