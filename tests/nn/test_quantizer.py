"""Vector quantizer: checked against numpy brute force and the EMA formulas by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.quantizer import (
    VectorQuantizer,
    assignment_stats,
    codebook_stats,
    ema_update,
    nearest_codes,
    smoothed_codebook,
)


def set_ema_codebook(q: VectorQuantizer, codes: np.ndarray):
    """Give an EMA quantizer the codebook ``codes`` with uniform counts (as at init)."""
    k = codes.shape[0]
    q.ema_count[...] = jnp.full((k,), 1.0 / k)
    q.ema_sum[...] = jnp.asarray(codes / k, jnp.float32)  # uniform counts: no smoothing shift


def ema_quantizer(k=4, d=2, *, decay=0.5, threshold=0.0, seed=0):
    return VectorQuantizer(k, d, ema_decay=decay, restart_threshold=threshold, rngs=nnx.Rngs(seed))


def test_nearest_codes_matches_brute_force():
    rng = np.random.default_rng(0)
    z, codebook = rng.normal(size=(37, 5)), rng.normal(size=(11, 5))
    expected = [np.argmin([np.sum((zi - e) ** 2) for e in codebook]) for zi in z]
    got = nearest_codes(jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, expected)


def test_straight_through_gradient_reaches_the_encoder():
    q = VectorQuantizer(8, 3, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(1), (2, 4, 3))
    target = jax.random.normal(jax.random.key(2), (2, 4, 3))

    def decoder_loss(x):
        return jnp.sum(jnp.sin(x) * target)

    grad_z = jax.grad(lambda z: decoder_loss(q(z).quantized))(z)
    out = q(z)
    np.testing.assert_allclose(out.quantized, q.lookup(out.indices), rtol=1e-6)
    # d loss / d z equals d loss / d quantized at the quantized values: cos(e) * target.
    np.testing.assert_allclose(grad_z, np.cos(np.asarray(out.quantized)) * target, rtol=1e-5)


def test_gradient_codebook_loss_and_step():
    q = VectorQuantizer(4, 2, beta=0.25, rngs=nnx.Rngs(0))
    codes = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [9.0, -9.0]], np.float32)
    q.codes[...] = jnp.asarray(codes)
    z = np.array([[0.5, 0.2], [0.1, -0.3], [4.0, 5.5], [5.5, 4.9]], np.float32)  # codes 0, 1

    out = q(jnp.asarray(z))
    np.testing.assert_array_equal(out.indices, [0, 0, 1, 1])
    e = codes[[0, 0, 1, 1]]
    np.testing.assert_allclose(out.loss, 1.25 * np.mean((z - e) ** 2), rtol=1e-6)

    grads = nnx.grad(lambda m: m(jnp.asarray(z)).loss)(q)
    new = codes - 0.1 * np.asarray(grads["codes"][...])
    for k, members in ((0, z[:2]), (1, z[2:])):
        before = np.sum((codes[k] - members) ** 2)
        assert np.sum((new[k] - members) ** 2) < before
    np.testing.assert_array_equal(new[2:], codes[2:])  # unused codes do not move
    # The gradient of the encoder side is the commitment only: 2 beta (z - e) / (N D).
    grad_z = jax.grad(lambda z: q(z).loss)(jnp.asarray(z))
    np.testing.assert_allclose(grad_z, 2 * 0.25 * (z - e) / z.size, rtol=1e-5)


def test_usage_and_perplexity_by_hand():
    stats = codebook_stats(jnp.array([[0, 0], [1, 2]]), 4)  # shares 1/2, 1/4, 1/4, 0
    np.testing.assert_allclose(stats["usage"], 0.75)
    np.testing.assert_allclose(stats["perplexity"], 2**1.5, rtol=1e-6)
    stats = codebook_stats(jnp.arange(5), 5)
    np.testing.assert_allclose(stats["perplexity"], 5.0, rtol=1e-6)
    np.testing.assert_allclose(codebook_stats(jnp.zeros(6, int), 3)["perplexity"], 1.0)


def test_ema_update_by_hand():
    decay, eps = 0.9, 1e-5
    count = np.array([0.5, 0.3, 0.2])
    sums = np.array([[1.0, 0.0], [0.0, 2.0], [0.4, 0.4]])
    z = np.array([[1.0, 2.0], [3.0, 0.0], [0.0, -1.0], [2.0, 2.0]])
    indices = np.array([0, 1, 0, 0])  # code 2 unused

    # by hand: n = (3, 1, 0) of N = 4 vectors; the sums per code divided by N
    new_count = 0.9 * count + 0.1 * np.array([3 / 4, 1 / 4, 0])
    code0 = (z[0] + z[2] + z[3]) / 4
    new_sums = 0.9 * sums + 0.1 * np.stack([code0, z[1] / 4, np.zeros(2)])
    total = new_count.sum()
    smooth = (new_count + eps) / (total + 3 * eps) * total
    codebook = new_sums / smooth[:, None]

    share, mean_sum = assignment_stats(jnp.asarray(z), jnp.asarray(indices), 3)
    got_count, got_sums = ema_update(jnp.asarray(count), jnp.asarray(sums), share, mean_sum, decay)
    np.testing.assert_allclose(got_count, new_count, rtol=1e-6)
    np.testing.assert_allclose(got_sums, new_sums, rtol=1e-6)
    np.testing.assert_allclose(smoothed_codebook(got_count, got_sums, eps), codebook, rtol=1e-6)

    # the module does the same update in train mode
    q = VectorQuantizer(3, 2, ema_decay=decay, epsilon=eps, rngs=nnx.Rngs(0))
    q.ema_count[...], q.ema_sum[...] = jnp.asarray(count), jnp.asarray(sums)
    old_codes = sums / ((count + eps) / (1 + 3 * eps))[:, None]
    expected_idx = np.argmin(((z[:, None] - old_codes[None]) ** 2).sum(-1), axis=1)
    out = q(jnp.asarray(z, jnp.float32))
    np.testing.assert_array_equal(out.indices, expected_idx)
    share = np.bincount(expected_idx, minlength=3) / 4
    means = np.stack([z[expected_idx == k].sum(0) / 4 for k in range(3)])
    np.testing.assert_allclose(q.ema_count[...], 0.9 * count + 0.1 * share, rtol=1e-6)
    np.testing.assert_allclose(q.ema_sum[...], 0.9 * sums + 0.1 * means, rtol=1e-5, atol=1e-7)
    # EMA codebook: the loss is the commitment only
    np.testing.assert_allclose(
        out.loss, 0.25 * np.mean((z - old_codes[expected_idx]) ** 2), rtol=1e-5
    )


def test_ema_codebook_is_not_a_parameter_and_starts_at_the_init_codes():
    q = ema_quantizer(6, 3)
    assert not nnx.state(q, nnx.Param)
    codes = q.codebook
    assert np.all(np.abs(codes) <= 1 / 6)
    g = VectorQuantizer(6, 3, rngs=nnx.Rngs(0))  # same key: same init codes
    np.testing.assert_allclose(codes, g.codes[...], rtol=1e-6)


def test_dead_codes_are_restarted():
    q = ema_quantizer(4, 2, decay=0.5, threshold=0.5)
    codes = np.array([[0.0, 0.0], [4.0, 4.0], [50.0, 50.0], [-50.0, 50.0]], np.float32)
    set_ema_codebook(q, codes)
    z = np.array([[0.1, 0.0], [0.0, -0.2], [4.2, 4.0], [4.0, 3.7], [3.9, 4.1]], np.float32)
    plain = ema_quantizer(4, 2, decay=0.5)  # same updates, no restarts
    set_ema_codebook(plain, codes)

    # step 1: codes 2, 3 unused, count 1/4 -> 1/8 = 0.5 / K: at the threshold, not below
    out = q(jnp.asarray(z), key=jax.random.key(0))
    plain(jnp.asarray(z))
    assert float(out.stats["dead"]) == 0.0
    np.testing.assert_allclose(q.codebook[2:], codes[2:], rtol=1e-3)
    # step 2: 1/16 < 1/8: both restarted from the batch's vectors; codes 0, 1 kept
    out = q(jnp.asarray(z), key=jax.random.key(1))
    plain(jnp.asarray(z))
    assert float(out.stats["dead"]) == 0.5
    new = np.asarray(q.codebook)
    for k in (2, 3):
        assert np.min(np.abs(z - new[k]).max(-1)) < 1e-5, new[k]
    assert not np.allclose(new[2], new[3])  # distinct vectors when N >= K
    np.testing.assert_allclose(new[:2], plain.codebook[:2], rtol=1e-3)
    np.testing.assert_allclose(q.ema_count[2:], 0.25)
    # not immediately dead again, and now used
    out = q(jnp.asarray(z), key=jax.random.key(2))
    assert float(out.stats["dead"]) == 0.0
    assert {2, 3} <= set(np.asarray(out.indices).tolist())


def test_restarts_need_ema_and_a_key():
    with pytest.raises(ValueError, match="gradient codebook lives in the parameters"):
        VectorQuantizer(4, 2, restart_threshold=0.1, rngs=nnx.Rngs(0))
    q = ema_quantizer(threshold=0.1)
    with pytest.raises(ValueError, match="pass key"):
        q(jnp.ones((3, 2)))
    nnx.view(q, deterministic=True)(jnp.ones((3, 2)))  # eval mode needs no key


def test_eval_mode_changes_no_state():
    q = ema_quantizer(4, 2, decay=0.5, threshold=0.9)
    before = jax.tree.map(np.asarray, nnx.state(q))
    ev = nnx.view(q, deterministic=True)
    assert ev.deterministic and not q.deterministic
    z = jax.random.normal(jax.random.key(0), (3, 5, 2))
    out = ev(z, key=jax.random.key(1))
    assert out.quantized.shape == z.shape and out.indices.shape == (3, 5)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(q), before)
    # train mode does change it
    q(z, key=jax.random.key(1))
    assert not np.array_equal(q.ema_count[...], before["ema_count"][...])


def _sharded_vs_whole(threshold: float, axis_name: str | None, shards=4):
    """The state after one train call: jit on the whole batch, and pmean of shards under vmap."""
    k, d = 6, 3
    q = ema_quantizer(k, d, decay=0.8, threshold=threshold, seed=3)
    # codes 0-2 near the data, 3-5 far: the far ones become dead at threshold 0.9
    codes = np.concatenate([np.eye(3), 30 + np.eye(3)]).astype(np.float32)
    set_ema_codebook(q, codes)
    z = jax.random.normal(jax.random.key(0), (8, 2, d)) * 0.3 + 0.3
    key = jax.random.key(7)
    graph, state = nnx.split(q)

    @jax.jit
    def whole(state, z):
        m = nnx.merge(graph, state)
        m(z, key=key)
        return nnx.state(m)

    q.axis_name = axis_name
    shard_graph = nnx.split(q)[0]

    def shard(state, z):
        m = nnx.merge(shard_graph, state)
        m(z, key=key)
        return jax.lax.pmean(nnx.state(m), "shards")  # what the engine does under pmap

    z_shards = z.reshape(shards, -1, *z.shape[1:])
    sharded = jax.vmap(shard, in_axes=(None, 0), axis_name="shards")(state, z_shards)
    return whole(state, z), jax.tree.map(lambda x: x[0], sharded)


@pytest.mark.parametrize("axis_name", [None, "shards"])
def test_ema_state_of_shards_equals_the_whole_batch(axis_name):
    whole, sharded = _sharded_vs_whole(0.0, axis_name)
    assert not np.allclose(whole["ema_count"][...], 1 / 6)  # the update did something
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), whole, sharded
    )


def test_restarts_of_shards_equal_the_whole_batch():
    whole, sharded = _sharded_vs_whole(0.9, "shards")
    assert np.all(np.asarray(whole["ema_count"][...][3:]) == np.float32(1 / 6))  # restarted
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), whole, sharded
    )


def test_bfloat16_input():
    q = VectorQuantizer(8, 4, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(0), (2, 3, 4)).astype(jnp.bfloat16)
    out = q(z)
    assert out.quantized.dtype == jnp.bfloat16 and out.loss.dtype == jnp.float32
    np.testing.assert_array_equal(out.indices, q(z.astype(jnp.float32)).indices)
    assert all(v.dtype == jnp.float32 for v in out.stats.values())
