"""DCGAN (Radford, Metz & Chintala 2016): the all-convolutional GAN, following the paper.

The paper's architecture guidelines (sec. 3), all applied here:
  * no pooling: the discriminator downsamples with stride-2 convolutions, the generator
    upsamples with stride-2 transposed ("fractionally-strided") convolutions;
  * no fully connected hidden layers: G's first layer is a matrix multiplication of z whose
    result is reshaped to a 4x4xC map (the paper's figure 1), D's last conv map is flattened into
    one output unit (a logit; D(x) = sigmoid(logit), see `zoo.nn.adversarial`);
  * BatchNorm in every layer except the generator's output layer and the discriminator's input
    layer. (The survey's sentence says BN is applied *only* to those two; the paper says the
    opposite: "not applying batchnorm to the generator output layer and the discriminator input
    layer" avoids sample oscillation. We follow the paper.)
  * ReLU in G, tanh at its output; LeakyReLU (slope 0.2) in every layer of D;
  * weights initialised from N(0, 0.02) (sec. 4); BatchNorm scale 1 and offset 0.

Resolution S is any power of two >= 8, with n = log2(S / 4) up/down stages:

  G: z [B, z_dim] -> Linear -> [B, 4, 4, G_0] -> BN, ReLU
     -> (n - 1) x [ConvT k x k stride 2 -> BN -> ReLU]  (4 -> 8 -> ... -> S/2)
     -> ConvT k x k stride 2 -> tanh                    (S/2 -> S, `channels` maps)
  D: x [B, S, S, C] -> Conv stride 2 -> LeakyReLU       (S -> S/2, no BN: the input layer)
     -> (n - 1) x [Conv k x k stride 2 -> BN -> LeakyReLU]   (S/2 -> ... -> 4)
     -> flatten -> Linear -> logit [B]

Widths: G's map at resolution S / 2^(j+1) (j = 0 the last hidden map) has g_base * 2^j channels,
doubling per stage going down in resolution; D's j-th conv (at S / 2^(j+1)) has d_base * 2^j.
Both are capped at `max_channels`. The LSUN 64x64 model of the paper (figure 1:
4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64x3, 5x5 kernels) is g_base = 128; its
discriminator mirrors it with ndf = 128 (128 -> 256 -> 512 -> 1024 channels) as in the authors'
released code (Newmu/dcgan_code). A layer followed by BatchNorm has no bias (BN's mean subtraction
cancels it); the G output, D input and D output layers have biases. BatchNorm is per channel with
momentum 0.9 (running averages; 1 - 0.9 = PyTorch's 0.1) and epsilon 1e-5. The paper's 64x64
config (z_dim 100, g_base 128, d_base 128, kernel 5, 3 channels) has 18,855,043 generator and
17,232,897 discriminator parameters (not stated in the paper; asserted in the tests).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from zoo.nn.subpixel import ConvTranspose2x

INIT = nnx.initializers.normal(0.02)  # "zero-centered Normal distribution with std 0.02" (sec. 4)
BN_MOMENTUM = 0.9
LEAKY_SLOPE = 0.2


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def num_stages(image_size: int) -> int:
    """n = log2(image_size / 4) up/down stages; ValueError unless a power of two >= 8."""
    if (
        not isinstance(image_size, numbers.Integral)
        or image_size < 8
        or image_size & (image_size - 1)
    ):
        raise ValueError(f"DCGAN needs image_size a power of two >= 8, got {image_size!r}")
    return int(image_size).bit_length() - 3


def _widths(base: int, n: int, max_channels: int) -> list[int]:
    """Channels of the n hidden maps from high to low resolution: base, 2 base, ... capped."""
    return [min(base * 2**j, max_channels) for j in range(n)]


def _batch_norm(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=1e-5, rngs=rngs)


class Layer(nnx.Module):
    """One layer: `op` (Linear, Conv or ConvTranspose2x), then BatchNorm when `norm` is not None.

    The activation is applied by the network, so `norm is None` is exactly the paper's
    "no batchnorm" placement and can be read off the module tree.
    """

    def __init__(self, op: nnx.Module, norm: nnx.BatchNorm | None):
        self.op, self.norm = op, norm

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.op(x)
        return x if self.norm is None else self.norm(x)


class Generator(nnx.Module):
    """DCGAN generator: `z: [B, z_dim]` -> images `[B, S, S, channels]` float32 in (-1, 1).

    `layers[0]` is the projection of z (Linear, reshaped to 4x4 before its BatchNorm), then the
    transposed convolutions; `layers[-1]` is the output layer (no BatchNorm, tanh).
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        z_dim: int = 100,
        g_base: int = 128,
        max_channels: int = 1024,
        kernel_size: int = 5,
        rngs: nnx.Rngs,
    ):
        n = num_stages(image_size)
        self.z_dim = _positive_int(z_dim, "z_dim")
        channels = _positive_int(channels, "channels")
        k = _positive_int(kernel_size, "kernel_size", 2)
        widths = _widths(
            _positive_int(g_base, "g_base"), n, _positive_int(max_channels, "max_channels")
        )
        widths = widths[::-1]  # low to high resolution: 4x4 first
        self.image_size, self.channels, self.base_width = image_size, channels, widths[0]
        conv_t = dict(kernel_size=k, kernel_init=INIT)  # stride 2, SAME
        layers = [
            Layer(
                nnx.Linear(z_dim, 16 * widths[0], use_bias=False, kernel_init=INIT, rngs=rngs),
                _batch_norm(widths[0], rngs),
            )
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(
                Layer(
                    ConvTranspose2x(c_in, c_out, use_bias=False, rngs=rngs, **conv_t),
                    _batch_norm(c_out, rngs),
                )
            )
        layers.append(Layer(ConvTranspose2x(widths[-1], channels, rngs=rngs, **conv_t), None))
        self.layers = nnx.List(layers)

    def __call__(
        self, z: jax.Array, cond: dict | None = None, *, noise_key=None, truncation: float = 1.0
    ) -> jax.Array:
        """Unconditional and noise-free: `cond`, `noise_key` and `truncation` are ignored."""
        del cond, noise_key, truncation
        if z.ndim != 2 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got shape {z.shape}")
        project, *hidden, output = self.layers
        h = project.op(z).reshape(z.shape[0], 4, 4, self.base_width)
        h = nnx.relu(project.norm(h))
        for layer in hidden:
            h = nnx.relu(layer(h))
        return jnp.tanh(output(h))


class Discriminator(nnx.Module):
    """DCGAN discriminator: images `[B, S, S, channels]` in [-1, 1] -> logits `[B]` float32.

    `layers[0]` is the input layer (no BatchNorm); every later conv has BatchNorm; `out` is the
    single output unit on the flattened 4x4 map.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        d_base: int = 128,
        max_channels: int = 1024,
        kernel_size: int = 5,
        rngs: nnx.Rngs,
    ):
        n = num_stages(image_size)
        channels = _positive_int(channels, "channels")
        k = _positive_int(kernel_size, "kernel_size", 2)
        widths = _widths(
            _positive_int(d_base, "d_base"), n, _positive_int(max_channels, "max_channels")
        )
        self.input_shape = (image_size, image_size, channels)
        conv = dict(kernel_size=(k, k), strides=(2, 2), padding="SAME", kernel_init=INIT)
        layers = [Layer(nnx.Conv(channels, widths[0], rngs=rngs, **conv), None)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(
                Layer(
                    nnx.Conv(c_in, c_out, use_bias=False, rngs=rngs, **conv),
                    _batch_norm(c_out, rngs),
                )
            )
        self.layers = nnx.List(layers)
        self.out = nnx.Linear(16 * widths[-1], 1, kernel_init=INIT, rngs=rngs)

    def __call__(self, images: jax.Array, cond: dict | None = None) -> jax.Array:
        """Unconditional: `cond` is ignored."""
        del cond
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(f"images must be [B, {self.input_shape}], got shape {images.shape}")
        h = images
        for layer in self.layers:
            h = nnx.leaky_relu(layer(h), LEAKY_SLOPE)
        return self.out(h.reshape(h.shape[0], -1))[:, 0]


def net_config() -> ml_collections.ConfigDict:
    """Architecture fields of `config.net` (defaults: the paper's 64x64 LSUN model).

    z_dim: noise dimension (100; the paper samples z uniformly, the objective chooses).
    g_base: channels of G's last hidden map, at S/2 (128); doubles per stage toward 4x4.
    d_base: channels of D's first conv, at S/2 (128); doubles per stage toward 4x4.
    max_channels: cap on any layer's channels (1024, the paper's widest).
    kernel_size: square kernel of every (transposed) convolution (5, the paper's figure 1).
    """
    return ml_collections.ConfigDict(
        dict(z_dim=100, g_base=128, d_base=128, max_channels=1024, kernel_size=5)
    )


def build_networks(config, *, rngs: nnx.Rngs) -> tuple[Generator, Discriminator]:
    """(generator, discriminator) from `config.net`, `config.data.image_size` and `.channels`."""
    channels = config.data.get("channels", None)
    if channels is None:
        raise ValueError("DCGAN needs config.data.channels (1 or 3) to size its input and output")
    net = config.net
    shared = dict(
        image_size=config.data.image_size,
        channels=channels,
        max_channels=net.max_channels,
        kernel_size=net.kernel_size,
        rngs=rngs,
    )
    generator = Generator(z_dim=net.z_dim, g_base=net.g_base, **shared)
    discriminator = Discriminator(d_base=net.d_base, **shared)
    return generator, discriminator
