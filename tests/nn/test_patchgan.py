"""PatchGAN discriminator: sizes, receptive field, BatchNorm modes, gradients, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.nn.patchgan import PatchDiscriminator, output_size, receptive_field, smallest_input

DIMS = ("NHWC", "HWIO", "NHWC")


@nnx.jit
def apply(model, x):
    return model(x)


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize(
    "shape, num_layers, expected",
    [
        ((256, 256), 3, (30, 30)),  # pix2pix's 70x70 PatchGAN on 256x256: 30x30 logits
        ((48, 64), 3, (4, 6)),  # 48 -> 24, 12, 6 -> 5 -> 4; 64 -> 32, 16, 8 -> 7 -> 6
        ((24, 24), 3, (1, 1)),  # the smallest for L = 3: 3 * 2^3
        ((16, 16), 2, (2, 2)),  # 16 -> 8, 4 -> 3 -> 2
        ((33, 35), 1, (14, 15)),  # odd sizes floor: 33 -> 16 -> 15 -> 14
    ],
)
def test_output_shapes(shape, num_layers, expected):
    d = nnx.eval_shape(
        lambda: PatchDiscriminator(3, channels=4, num_layers=num_layers, rngs=nnx.Rngs(0))
    )  # shapes only: tracing, no initialisation or compilation
    y = nnx.eval_shape(lambda d, x: d(x), d, jax.ShapeDtypeStruct((2, *shape, 3), jnp.float32))
    assert y.shape == (2, *expected, 1) and y.dtype == jnp.float32
    assert (output_size(shape[0], num_layers), output_size(shape[1], num_layers)) == expected


def test_widths_double_up_to_8x_and_only_unnormalised_convs_have_biases():
    d = nnx.eval_shape(lambda: PatchDiscriminator(1, channels=2, num_layers=5, rngs=nnx.Rngs(0)))
    widths = [d.first.kernel.shape[-1]] + [c.kernel.shape[-1] for c in d.convs]
    assert widths == [2, 4, 8, 16, 16, 16] and d.head.kernel.shape == (4, 4, 16, 1)
    assert d.first.bias is not None and d.head.bias is not None
    assert all(c.bias is None for c in d.convs) and len(d.norms) == 5
    plain = nnx.eval_shape(
        lambda: PatchDiscriminator(1, channels=2, num_layers=5, norm="none", rngs=nnx.Rngs(0))
    )
    assert all(c.bias is not None for c in plain.convs) and len(plain.norms) == 0


def test_too_small_inputs_say_which_num_layers_fits():
    for num_layers in range(1, 5):
        n = smallest_input(num_layers)
        assert output_size(n, num_layers) == 1 and output_size(n - 1, num_layers) == 0
    d = nnx.eval_shape(lambda: PatchDiscriminator(3, channels=4, num_layers=3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"16x16 .* num_layers=3 .* >= 24 .* num_layers <= 2 fits"):
        d(jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="no num_layers fits"):
        d(jnp.zeros((1, 5, 40, 3)))
    with pytest.raises(ValueError, match="num_layers"):
        PatchDiscriminator(3, num_layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="norm"):
        PatchDiscriminator(3, norm="instance", rngs=nnx.Rngs(0))


def test_receptive_field_by_hand():
    # Back from one logit, r -> (r - 1) * stride + 4: two stride-1 convs give 4, 7, then each
    # stride-2 conv 16, 34, 70, 142.
    assert [receptive_field(n) for n in (1, 2, 3, 4)] == [16, 34, 70, 142]


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_a_logit_sees_exactly_its_70x70_patch(norm):
    d = PatchDiscriminator(2, channels=4, num_layers=3, norm=norm, rngs=nnx.Rngs(0))
    for _, m in nnx.iter_modules(d):
        if isinstance(m, nnx.Conv):
            m.kernel[...] = 25 * m.kernel[...]  # N(0, 0.5): changes far above rounding
    # Train-mode BatchNorm mixes all positions.
    d = nnx.view(d, use_running_average=True, raise_if_not_found=False)
    # Logit i starts at input row 8i - 23: each conv maps a start p to stride * p - 1 (its
    # padding), back through 1, 1, 2, 2, 2: i - 1, i - 2, 2i - 5, 4i - 11, 8i - 23. For
    # i = 5 on 96x96 (10x10 logits): rows and columns 17 .. 86, 70 pixels.
    lo, hi = 17, 86
    assert hi - lo + 1 == receptive_field(3)
    x = normal(1, (1, 96, 96, 2))
    base = apply(d, x)[0, 5, 5, 0]
    inside = np.zeros((96, 96), bool)
    inside[lo : hi + 1, lo : hi + 1] = True
    outside = jnp.where(inside[None, :, :, None], x, x + 3 * normal(2, x.shape))
    assert float(apply(d, outside)[0, 5, 5, 0]) == pytest.approx(float(base), abs=1e-6)
    for r, c in [(lo, lo), (hi, hi), (lo, hi), (50, hi)]:  # the patch's corners and an edge
        changed = float(apply(d, x.at[0, r, c, 0].add(3.0))[0, 5, 5, 0])
        assert abs(changed - float(base)) > 1e-4, (r, c)


def test_batchnorm_train_mode_couples_the_batch_and_eval_mode_does_not():
    d = PatchDiscriminator(3, channels=4, num_layers=2, rngs=nnx.Rngs(0))
    x = normal(3, (4, 32, 32, 3))
    x_other = x.at[1:].set(normal(4, (3, 32, 32, 3)))  # example 0 unchanged
    stats = lambda m: jax.tree.map(jnp.copy, nnx.state(m, nnx.BatchStat))  # noqa: E731

    fresh = stats(d)
    train0 = apply(d, x)[0]
    after = stats(d)
    assert not np.allclose(apply(d, x_other)[0], train0, atol=1e-5)  # batch statistics
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), fresh, after)
    assert all(jax.tree.leaves(moved))  # every running mean and variance was updated

    evaluated = nnx.view(d, use_running_average=True)
    before = stats(d)
    np.testing.assert_allclose(
        apply(evaluated, x_other)[0], apply(evaluated, x)[0], rtol=1e-6, atol=1e-7
    )
    assert not np.allclose(apply(evaluated, x)[0], train0, atol=1e-5)
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), before, stats(d))
    assert all(jax.tree.leaves(same))  # eval mode writes no statistics
    group = PatchDiscriminator(3, channels=4, num_layers=2, norm="group", rngs=nnx.Rngs(0))
    assert not jax.tree.leaves(nnx.state(group, nnx.BatchStat))
    np.testing.assert_allclose(apply(group, x_other)[0], apply(group, x)[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_gradients_are_finite(norm):
    d = PatchDiscriminator(3, channels=4, num_layers=2, norm=norm, rngs=nnx.Rngs(0))
    x = normal(5, (2, 16, 16, 3))

    def loss(model, x):
        return jnp.mean(jax.nn.softplus(-model(x)))  # the non-saturating loss on "real"

    grads, gx = nnx.jit(nnx.grad(loss, argnums=(0, 1)))(d, x)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert bool(jnp.all(jnp.isfinite(gx))) and float(jnp.abs(gx).max()) > 0
    assert float(jnp.abs(grads.head.kernel[...]).max()) > 0


def test_matches_an_explicit_pad_and_valid_conv_computation():
    """The conv's padding=1 against jnp.pad + VALID lax convs (values and input gradients)."""
    d = PatchDiscriminator(3, channels=4, num_layers=3, norm="none", rngs=nnx.Rngs(0))
    convs = [d.first, *d.convs, d.head]
    strides = [2, 2, 2, 1, 1]

    def reference(x):
        for i, (conv, s) in enumerate(zip(convs, strides, strict=True)):
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            x = jax.lax.conv_general_dilated(x, conv.kernel[...], (s, s), "VALID",
                                             dimension_numbers=DIMS)  # fmt: skip
            x = x + conv.bias[...]
            x = jax.nn.leaky_relu(x, 0.2) if i < 4 else x
        return x

    x = normal(6, (2, 40, 48, 3))
    np.testing.assert_allclose(apply(d, x), jax.jit(reference)(x), rtol=1e-5, atol=1e-7)
    loss = lambda f: lambda x: jnp.sum(jnp.sin(100 * f(x)))  # noqa: E731
    grad = lambda f: jax.jit(jax.grad(loss(f)))(x)  # noqa: E731
    np.testing.assert_allclose(grad(d), grad(reference), rtol=1e-4, atol=1e-6)


def test_dcgan_init_and_dtype():
    # channels=4 as the other tests: the same shapes reuse their compiled initialisers.
    d = PatchDiscriminator(3, channels=4, num_layers=3, rngs=nnx.Rngs(0))
    kernels = np.concatenate(
        [np.ravel(c.kernel[...]) for c in [d.first, *d.convs, d.head]]
    )  # 11,456 draws
    assert abs(kernels.mean()) < 1e-3 and kernels.std() == pytest.approx(0.02, rel=0.03)
    scales = np.concatenate([np.asarray(n.scale[...]) for n in d.norms])  # 56 draws
    assert abs(scales.mean() - 1) < 0.01 and 0.01 < scales.std() < 0.03
    assert all(float(jnp.abs(n.bias[...]).max()) == 0 for n in d.norms)
    assert float(jnp.abs(d.first.bias[...]).max()) == 0
    half = PatchDiscriminator(3, channels=4, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert half.first.kernel[...].dtype == jnp.float32
    assert apply(half, normal(7, (1, 32, 32, 3))).dtype == jnp.float32
