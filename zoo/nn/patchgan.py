"""PatchGAN discriminator (Isola et al. 2017, pix2pix), as VQGAN trains its autoencoder with.

A fully convolutional classifier: instead of one real/fake logit per image it gives one
per overlapping patch, so the loss is a sum of local texture judgements (70x70 pixels
each at the default depth) and the net works at any image size.

Layers (``num_layers`` = L, width ``c``), every conv 4x4 with one zero pixel per side:
  conv stride 2 -> c, LeakyReLU(0.2);
  L - 1 x [conv stride 2 -> c * min(2^n, 8), norm, LeakyReLU(0.2)], n = 1 .. L - 1;
  conv stride 1 -> c * min(2^L, 8), norm, LeakyReLU(0.2);
  conv stride 1 -> 1 (the logits).
A conv followed by a norm has no bias (the norm's shift replaces it), as in pix2pix and
taming-transformers. Sizes: a stride-2 conv maps n to floor(n / 2), a stride-1 one to
n - 1, so 256x256 gives 30x30 logits at L = 3, and an input needs at least 3 * 2^L pixels
per side (:func:`smallest_input`). Initialisation is DCGAN's: conv kernels N(0, 0.02),
norm scales N(1, 0.02), biases and norm shifts 0.

The padding is the conv's own (``padding=1``), not ``jnp.pad`` before a VALID conv:
XLA:CPU's slow kernel gradient (DESIGN.md) comes with padding above (k - 1) / 2 per side,
and 1 is below 1.5. Measured on 2 CPU cores (jax 0.10.2; other jobs kept the load average
at 1.6-2.9), the two forms interleaved, best of 10: the parameter gradient of the summed
logits (L = 3, c = 64, batch norm, batch 8, 128x128x3) took 0.27 s with ``padding=1`` and
0.32 s with ``jnp.pad`` + VALID. One 4x4 conv (batch 8, 32x32x128 -> 128, kernel and input
gradients, best of 14): stride 2 0.028 s (pad + VALID 0.033 s), stride 1 0.09 s (0.16 s);
with ``padding=2`` instead, 2.3 s against 0.11 s: the trap, which padding 1 does not meet.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.blocks import num_groups

Norm = Literal["batch", "group", "none"]
KERNEL = 4  # every conv is 4x4 with 1 pixel of zero padding per side
DCGAN_INIT = nnx.initializers.normal(0.02)


def _scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Norm scales N(1, 0.02), as DCGAN's ``weights_init``."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def output_size(size: int, num_layers: int) -> int:
    """Logits per side for ``size`` input pixels per side (0: too small)."""
    for stride in [2] * num_layers + [1, 1]:
        size = (size + 2 - KERNEL) // stride + 1 if size + 2 >= KERNEL else 0
    return size


def smallest_input(num_layers: int) -> int:
    """The fewest pixels per side that give a 1x1 output: L halvings to 3, then 3 -> 2 -> 1."""
    return 3 * 2**num_layers


def receptive_field(num_layers: int) -> int:
    """Side (pixels) of the input patch one logit sees: 70 at L = 3 (pix2pix's 70x70 PatchGAN).

    Walked back from one logit: a k x k conv with stride s needs ``(r - 1) * s + k`` inputs
    for ``r`` outputs.
    """
    r = 1
    for stride in [1, 1] + [2] * num_layers:
        r = (r - 1) * stride + KERNEL
    return r


def _conv(in_channels: int, out_channels: int, stride: int, use_bias: bool, *, dtype, rngs):
    """4x4 conv, 1 pixel of zero padding per side, DCGAN init, float32 parameters."""
    return nnx.Conv(
        in_channels,
        out_channels,
        (KERNEL, KERNEL),
        strides=stride,
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        kernel_init=DCGAN_INIT,
        bias_init=nnx.initializers.zeros,
        dtype=dtype,
        rngs=rngs,
    )


def _norm(kind: Norm, channels: int, *, dtype, rngs: nnx.Rngs) -> nnx.Module:
    if kind == "batch":
        # momentum 0.9 is PyTorch's BatchNorm2d default (its "momentum=0.1"), as pix2pix.
        return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, scale_init=_scale_init,
                             dtype=dtype, rngs=rngs)  # fmt: skip
    return nnx.GroupNorm(channels, num_groups(channels), epsilon=1e-6, scale_init=_scale_init,
                         dtype=dtype, rngs=rngs)  # fmt: skip


class PatchDiscriminator(nnx.Module):
    """PatchGAN: images ``[B, H, W, in_channels]`` -> logits ``[B, h, w, 1]`` float32 (per patch).

    ``h = output_size(H, num_layers)`` (30 for 256 at L = 3); each logit sees a
    ``receptive_field(num_layers)``-pixel square patch (70 at L = 3). ``norm``: ``"batch"``
    (``nnx.BatchNorm``; switch to running averages with ``nnx.view(d,
    use_running_average=True)``, and write back its ``batch_stats`` after a train-mode call),
    ``"group"`` (GroupNorm, up to 32 groups; no state), or ``"none"``. Convs run in ``dtype``;
    parameters are float32.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int = 64,
        num_layers: int = 3,
        norm: Norm = "batch",
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be 'batch', 'group' or 'none', got {norm!r}")
        self.num_layers, self.norm = num_layers, norm
        widths = [channels * min(2**n, 8) for n in range(num_layers + 1)]
        self.first = _conv(in_channels, widths[0], 2, True, dtype=dtype, rngs=rngs)
        convs, norms = [], []
        for n in range(1, num_layers + 1):  # the last of these has stride 1
            stride = 2 if n < num_layers else 1
            convs.append(
                _conv(widths[n - 1], widths[n], stride, norm == "none", dtype=dtype, rngs=rngs)
            )
            if norm != "none":
                norms.append(_norm(norm, widths[n], dtype=dtype, rngs=rngs))
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)  # empty for norm="none"
        self.head = _conv(widths[-1], 1, 1, True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[1:3]
        if min(output_size(h, self.num_layers), output_size(w, self.num_layers)) < 1:
            fits = [n for n in range(1, self.num_layers) if smallest_input(n) <= min(h, w)]
            hint = f"num_layers <= {fits[-1]} fits it" if fits else "no num_layers fits it"
            raise ValueError(
                f"a {h}x{w} input is too small for a PatchDiscriminator with num_layers="
                f"{self.num_layers} (needs >= {smallest_input(self.num_layers)} pixels per "
                f"side); {hint}"
            )
        x = jax.nn.leaky_relu(self.first(x), 0.2)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = jax.nn.leaky_relu(x, 0.2)
        return self.head(x).astype(jnp.float32)
