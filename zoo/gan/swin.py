"""Swin-style local attention: windows, shifted-window masks, relative position bias, and
StyleSwin's double attention.

Swin Transformer (Liu et al. 2021) restricts self-attention to non-overlapping ``window x
window`` patches of a ``[B, H, W, C]`` token map, and alternates blocks whose windows are
displaced by ``shift = window // 2`` so that information crosses window borders. The shifted
partition is computed as a cyclic roll of the map by ``-shift`` followed by the regular
partition; the tokens that wrapped around the border then share a window with tokens that were
far away in the image, so an attention mask keeps tokens of different *regions* (wrapped or
not, per axis) from attending to each other (Swin, sec. 3.2, "efficient batch computation").

Each window adds a learned relative position bias ``B[dy, dx]`` per head to the attention
logits (Swin, eq. 4): ``softmax(q k^T / sqrt(d) + B) v``, with ``(2 window - 1)^2`` entries.

StyleSwin (Zhang et al. 2022, sec. 3.2) replaces Swin's alternation with *double attention*:
the heads are split in two halves, one half attends within regular windows and the other within
shifted windows, and their outputs are concatenated, so every block sees a receptive field of
both partitions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.nn.attention import query_key_scores

# Linear layers of Swin/StyleSwin: truncated normal, std 0.02, zero bias (timm's init).
LINEAR_INIT = nnx.initializers.truncated_normal(stddev=0.02)
_MASKED = float(jnp.finfo(jnp.float32).min)


def check_window(height: int, width: int, window: int, shift: int = 0) -> None:
    """ValueError unless ``window`` tiles a ``height x width`` map and 0 <= shift < window."""
    if window < 1 or height % window or width % window:
        raise ValueError(f"window {window} does not tile a {height}x{width} map")
    if not 0 <= shift < window:
        raise ValueError(f"shift must be in [0, window={window}), got {shift}")


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """Cuts a token map into windows.

    Args:
      x: ``[B, H, W, C]`` with H and W multiples of ``window``.
      window: window side in tokens.

    Returns:
      ``[B * nW, window * window, C]``, nW = (H / window) (W / window) windows per image, ordered
      image-major, then window rows, then window columns; tokens row-major inside a window.
    """
    b, h, w, c = x.shape
    check_window(h, w, window)
    x = x.reshape(b, h // window, window, w // window, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, nH, nW, window, window, C]
    return x.reshape(-1, window * window, c)


def window_merge(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
    """Inverse of :func:`window_partition`: ``[B * nW, window^2, C] -> [B, height, width, C]``."""
    check_window(height, width, window)
    nh, nw = height // window, width // window
    c = windows.shape[-1]
    x = windows.reshape(-1, nh, nw, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window: int) -> np.ndarray:
    """``[N, N]`` int32, N = window^2: the row of the bias table for query i and key j.

    Offsets (dy, dx) in [-(window-1), window-1]^2 are flattened as
    ``(dy + window - 1) * (2 window - 1) + (dx + window - 1)`` (Swin, sec. 3.2).
    """
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([ys.ravel(), xs.ravel()], -1)  # [N, 2]
    rel = coords[:, None, :] - coords[None, :, :] + (window - 1)  # [N, N, 2] in [0, 2w-2]
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).astype(np.int32)


def shifted_window_regions(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """``[H, W]`` int32 region labels of the map *after* the cyclic roll by ``-shift``.

    Swin's labelling: along each axis the slices ``[0, S - window)``, ``[S - window, S - shift)``
    and ``[S - shift, S)`` (the last one holds the tokens that wrapped around) get distinct
    labels; the 2-D label is ``3 * row_slice + col_slice``.
    """
    check_window(height, width, window, shift)

    def axis_labels(size):
        labels = np.zeros(size, np.int32)
        if shift:
            labels[size - window : size - shift] = 1
            labels[size - shift :] = 2
        return labels

    return 3 * axis_labels(height)[:, None] + axis_labels(width)[None, :]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """``[nW, N, N]`` bool mask (True = may attend) for attention within shifted windows.

    Inside each window of the rolled map, query i may attend to key j only if both come from the
    same region (:func:`shifted_window_regions`). With ``shift == 0`` (also whenever one window
    covers the whole map, where shifting is a no-op) every entry is True.
    """
    regions = shifted_window_regions(height, width, window, shift)
    # window_partition's layout, in numpy (the mask is a trace-time constant): [nW, N].
    labels = regions.reshape(height // window, window, width // window, window)
    labels = labels.transpose(0, 2, 1, 3).reshape(-1, window * window)
    return labels[:, :, None] == labels[:, None, :]


class WindowAttention(nnx.Module):
    """Multi-head attention inside windows with a learned relative position bias (Swin, eq. 4).

    Holds only the bias table ``[(2 window - 1)^2, num_heads]`` (truncated normal, std 0.02);
    the q/k/v projections belong to the caller (StyleSwin projects once and splits channels).
    """

    def __init__(self, dim: int, window: int, num_heads: int, *, rngs: nnx.Rngs):
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim, self.window, self.num_heads = dim, window, num_heads
        self.bias_table = nnx.Param(LINEAR_INIT(rngs.params(), ((2 * window - 1) ** 2, num_heads)))
        self.dtype = jnp.float32  # compute dtype of q k^T and p v (zoo.engine.precision)

    def __call__(
        self, q: jax.Array, k: jax.Array, v: jax.Array, mask: np.ndarray | None = None
    ) -> jax.Array:
        """Attention of ``q, k, v: [B * nW, N, dim]`` (N = window^2) -> ``[B * nW, N, dim]``.

        ``mask``: ``[nW, N, N]`` bool (True = may attend), shared by the B images; None = none.
        """
        n = self.window**2
        if q.shape[1] != n or q.shape[2] != self.dim:
            raise ValueError(f"expected [B*nW, {n}, {self.dim}] windows, got {q.shape}")

        def heads(t):  # [B*nW, N, dim] -> [B*nW, N, heads, dim / heads]
            return t.reshape(t.shape[:2] + (self.num_heads, -1))

        q, k, v = (heads(t.astype(self.dtype)) for t in (q, k, v))
        logits = query_key_scores(q, k)
        logits = logits * (q.shape[-1] ** -0.5)
        bias = self.bias_table[...][relative_position_index(self.window)]  # [N, N, heads]
        logits = logits + bias.transpose(2, 0, 1).astype(jnp.float32)
        if mask is not None:
            num_windows = mask.shape[0]
            logits = logits.reshape((-1, num_windows) + logits.shape[1:])
            logits = jnp.where(jnp.asarray(mask)[None, :, None], logits, _MASKED)
            logits = logits.reshape((-1,) + logits.shape[2:])
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return out.reshape(out.shape[:2] + (self.dim,))


class DoubleWindowAttention(nnx.Module):
    """StyleSwin's double attention (sec. 3.2) on a ``[B, H, W, dim]`` map -> same shape.

    One qkv projection; channels (and heads) split in halves: half 0 attends in windows shifted
    by ``shifts[0]``, half 1 in windows shifted by ``shifts[1]`` (StyleSwin: 0 and window // 2),
    each half with its own relative position bias; outputs concatenated, then projected.
    ``window`` is clamped to the map size; a shift is dropped (set to 0) when one window covers
    the map, where a cyclic shift would only relabel the same window (Swin's rule).
    """

    def __init__(
        self,
        dim: int,
        resolution: int,
        window: int,
        num_heads: int,
        *,
        shifts: tuple[int, int] | None = None,
        rngs: nnx.Rngs,
    ):
        if dim % 2 or num_heads % 2:
            raise ValueError(f"double attention needs even dim and heads, got {dim}, {num_heads}")
        window = min(window, resolution)
        if shifts is None:
            shifts = (0, window // 2)
        if resolution <= window:
            shifts = (0, 0)
        for s in shifts:
            check_window(resolution, resolution, window, s)
        self.dim, self.resolution, self.window, self.shifts = dim, resolution, window, tuple(shifts)
        dense = dict(kernel_init=LINEAR_INIT, bias_init=nnx.initializers.zeros, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, **dense)
        self.attn = nnx.List(
            [WindowAttention(dim // 2, window, num_heads // 2, rngs=rngs) for _ in range(2)]
        )
        self.proj = nnx.Linear(dim, dim, **dense)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        if (h, w, c) != (self.resolution, self.resolution, self.dim):
            raise ValueError(f"expected [B, {self.resolution}, {self.resolution}, {self.dim}]")
        qkv = self.qkv(x)  # [B, H, W, 3C]: q, k, v blocks of C channels each
        outs = []
        for half, (attn, shift) in enumerate(zip(self.attn, self.shifts, strict=True)):
            # The masks are numpy constants built at trace time (static shapes).
            mask = shifted_window_mask(h, w, self.window, shift) if shift else None
            part = [qkv[..., i * c + half * c // 2 : i * c + (half + 1) * c // 2] for i in range(3)]
            if shift:  # shifted windows = regular windows of the map rolled by -shift
                part = [jnp.roll(t, (-shift, -shift), axis=(1, 2)) for t in part]
            q, k, v = (window_partition(t, self.window) for t in part)
            out = window_merge(attn(q, k, v, mask), self.window, h, w)
            outs.append(jnp.roll(out, (shift, shift), axis=(1, 2)) if shift else out)
        return self.proj(jnp.concatenate(outs, axis=-1))
