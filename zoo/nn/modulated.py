"""Weight-modulated convolution (StyleGAN2) with GigaGAN's sample-adaptive kernel selection.

StyleGAN2 (Karras et al. 2020, sec. 2.2, eq. 1-3) replaces AdaIN by scaling the
convolution weights with the per-sample style ``s`` (modulation,
``w'_ijk = s_i * w_ijk``) and then rescaling each output feature map so that
unit-variance input gives unit-variance output (demodulation,
``w''_ijk = w'_ijk / sqrt(sum_{i,k} w'_ijk^2 + eps)``). GigaGAN (Kang et al.
2023, sec. 3.1) first builds each sample's kernel as a softmax-weighted sum of a
bank of N kernels, chosen by the style, and then modulates it the same way.

Layout: ``x: [B, H, W, I]`` (NHWC); kernels ``[k, k, I, O]`` (HWIO) or
per-sample ``[B, k, k, I, O]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn.equalized import EqualizedDense, blur
from zoo.nn.subpixel import zero_insert_conv

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array, *, up: bool, groups: int = 1) -> jax.Array:
    """SAME conv, or (``up``) x2 zero-insertion + conv + [1,3,3,1] blur: ``H -> 2H``.

    The upsampling path is StyleGAN2's transposed stride-2 conv followed by the
    blur with gain 4; with a centred delta kernel it equals
    :func:`zoo.nn.equalized.upsample2x`.
    """
    k = kernel.shape[0]
    if not up:
        pad = ((k // 2, k // 2),) * 2
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), pad, dimension_numbers=_DIMS, feature_group_count=groups
        )
    y = zero_insert_conv(x, kernel, groups)  # [B, 2H + k - 2, 2W + k - 2, G * O]
    p0 = (6 - k) // 2
    return blur(y, (p0, 5 - k - p0), gain=4.0)


def modulated_conv(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
    up: bool = False,
) -> jax.Array:
    """StyleGAN2 modulated convolution (eq. 1-3): ``[B, H, W, I] -> [B, H', W', O]``.

    Args:
      x: ``[B, H, W, I]`` input features.
      weight: ``[k, k, I, O]`` kernel shared by the batch, or ``[B, k, k, I, O]``
        one kernel per sample (k odd). Used as given: any equalised-LR scale is
        the caller's.
      styles: ``[B, I]`` per-sample input-channel scales ``s_i`` (eq. 1).
      demodulate: divide each sample's output channel j by
        ``sqrt(sum_{i,k} (s_i w_ijk)^2 + eps)`` (eq. 3).
      up: double H and W (transposed conv, then the [1, 3, 3, 1] blur).

    A shared kernel is applied with "scale the input, convolve, scale the output"
    (one batched conv; exact because both scales are per channel). A per-sample
    kernel is modulated explicitly and run as one grouped conv with
    ``feature_group_count = B``.
    """
    b, _, _, ci = x.shape
    if weight.ndim not in (4, 5):
        raise ValueError(f"weight must be [k, k, I, O] or [B, k, k, I, O], got {weight.shape}")
    k, k2, wi, co = weight.shape[-4:]
    if k != k2 or k % 2 == 0:
        raise ValueError(f"kernel must be square with odd size, got {weight.shape}")
    if wi != ci:
        raise ValueError(f"weight expects {wi} input channels, x has {ci}")
    if styles.shape != (b, ci):
        raise ValueError(f"styles must be [B, I] = {(b, ci)}, got {styles.shape}")
    if weight.ndim == 5 and weight.shape[0] != b:
        raise ValueError(f"per-sample weight has batch {weight.shape[0]}, x has {b}")
    weight = weight.astype(x.dtype)
    styles = styles.astype(x.dtype)

    if weight.ndim == 4:
        y = _conv(x * styles[:, None, None, :], weight, up=up)
        if demodulate:
            # sum_{i,k} (s_i w_ijk)^2 = sum_i s_i^2 (sum_k w_ijk^2): one [B, I] @ [I, O] matmul.
            d = jax.lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), (0, 1)) + eps)
            y = y * d[:, None, None, :]
        return y

    w = weight * styles[:, None, None, :, None]  # eq. 1: [B, k, k, I, O]
    if demodulate:
        w = w * jax.lax.rsqrt(jnp.sum(jnp.square(w), (1, 2, 3), keepdims=True) + eps)  # eq. 3
    # Fold the batch into channels: group g sees input channels g*I.. and owns outputs g*O..
    _, h, wd, _ = x.shape
    xg = x.transpose(1, 2, 0, 3).reshape(1, h, wd, b * ci)
    wg = w.transpose(1, 2, 3, 0, 4).reshape(k, k, ci, b * co)
    y = _conv(xg, wg, up=up, groups=b)  # [1, H', W', B*O]
    ho, wo = y.shape[1:3]
    return y.reshape(ho, wo, b, co).transpose(2, 0, 1, 3)


def modulated_conv_bank(
    x: jax.Array,
    bank: jax.Array,
    logits: jax.Array,
    styles: jax.Array,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
    up: bool = False,
) -> jax.Array:
    """``modulated_conv(x, select_kernel(bank, logits), styles)`` without per-sample kernels.

    ``bank: [N, k, k, I, O]``, ``logits: [B, N]`` -> ``[B, H', W', O]``. A convolution is
    linear in its kernel, so the conv with each sample's mixed kernel equals the
    softmax-weighted sum of the convs with the N bank kernels: one batched conv with
    ``N * O`` output channels on the style-scaled input, a per-sample mix, then the
    demodulation of the mixed kernel. That is N times a plain conv's multiplications,
    but plain convs run far faster than a ``feature_group_count = B`` grouped conv: the
    generator of `configs/gigagan_shapes.py` (batch 32) takes 1.6 s forward + backward
    this way against 12.1 s grouped, on 2 CPU cores.
    """
    b, _, _, ci = x.shape
    if bank.ndim != 5 or logits.shape != (b, bank.shape[0]):
        raise ValueError(
            f"need bank [N, k, k, I, O] and logits [B, N] with B = {b}, got {bank.shape}, "
            f"{logits.shape}"
        )
    n, k, _, wi, co = bank.shape
    if wi != ci or styles.shape != (b, ci):
        raise ValueError(f"bank {bank.shape} / styles {styles.shape} do not fit x {x.shape}")
    bank = bank.astype(x.dtype)
    styles = styles.astype(x.dtype)
    p = _selection_weights(logits, x.dtype)  # [B, N]
    wide = bank.transpose(1, 2, 3, 0, 4).reshape(k, k, ci, n * co)
    y = _conv(x * styles[:, None, None, :], wide, up=up)  # [B, H', W', N * O]
    y = jnp.einsum("bhwno,bn->bhwo", y.reshape(*y.shape[:3], n, co), p)
    if demodulate:
        # sum_{i,k} (s_i w_ijk)^2 of each sample's mixed kernel w = sum_n p_n bank_n.
        sq = jnp.sum(jnp.square(_mix_kernels(bank, p)), (1, 2))  # [B, I, O]
        d = jax.lax.rsqrt(jnp.einsum("bi,bio->bo", jnp.square(styles), sq) + eps)
        y = y * d[:, None, None, :]
    return y


def select_kernel(bank: jax.Array, logits: jax.Array) -> jax.Array:
    """GigaGAN's sample-adaptive kernel (sec. 3.1): ``sum_n softmax(logits)_n * bank_n``.

    ``bank: [N, k, k, I, O]``, ``logits: [B, N]`` -> ``[B, k, k, I, O]``. The
    softmax runs in float32.
    """
    if bank.ndim != 5 or logits.ndim != 2 or logits.shape[1] != bank.shape[0]:
        raise ValueError(
            f"need bank [N, k, k, I, O] and logits [B, N], got {bank.shape}, {logits.shape}"
        )
    return _mix_kernels(bank, _selection_weights(logits, bank.dtype))


def _selection_weights(logits: jax.Array, dtype) -> jax.Array:
    """``softmax(logits)`` over the bank axis, computed in float32: ``[B, N]``."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def _mix_kernels(bank: jax.Array, weights: jax.Array) -> jax.Array:
    """``[N, k, k, I, O]``, ``[B, N]`` -> each sample's kernel ``sum_n weights_n bank_n``."""
    return jnp.einsum("bn,nhwio->bhwio", weights, bank)


class ModulatedConv(nnx.Module):
    """Style-modulated conv layer: ``(x [B, H, W, I], w [B, w_dim]) -> [B, H', W', O]``.

    ``styles = affine(w)``, an :class:`EqualizedDense` with bias 1 (so styles start
    near 1); the conv kernel is stored ``N(0, 1)`` and multiplied by
    ``1 / sqrt(I * k * k)`` (equalised learning rate). ``num_kernels > 1`` keeps a
    bank ``[N, k, k, I, O]`` and picks each sample's kernel with
    :func:`select_kernel` on the logits of a second EqualizedDense of ``w``
    (GigaGAN). ``up=True`` doubles H and W. The layer has no bias, noise or
    activation: callers add them (StyleGAN2 adds noise, bias, then lrelu). Computes in
    ``dtype``, demodulation included (the parameters stay float32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        *,
        demodulate: bool = True,
        up: bool = False,
        num_kernels: int = 1,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if num_kernels < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        if min(in_channels, out_channels, w_dim) < 1:
            raise ValueError(
                f"channels and w_dim must be >= 1, got {in_channels, out_channels, w_dim}"
            )
        self.demodulate, self.up, self.num_kernels = demodulate, up, num_kernels
        self.dtype = dtype
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.affine = EqualizedDense(w_dim, in_channels, bias_init=1.0, rngs=rngs)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        if num_kernels > 1:
            shape = (num_kernels, *shape)
            self.kernel_select = EqualizedDense(w_dim, num_kernels, rngs=rngs)
        else:
            self.kernel_select = None
        self.weight = nnx.Param(jax.random.normal(rngs.params(), shape))

    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)  # modulated_conv computes in x's dtype
        styles = self.affine(w)
        weight = self.weight[...] * self.weight_gain
        if self.kernel_select is not None:
            return modulated_conv_bank(
                x, weight, self.kernel_select(w), styles, demodulate=self.demodulate, up=self.up
            )
        return modulated_conv(x, weight, styles, demodulate=self.demodulate, up=self.up)
