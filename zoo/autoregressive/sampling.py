"""Ancestral sampling of image tokens from a token decoder (``zoo.nn.transformer``).

Image token i is drawn from ``p(x_i | prefix, context, x_<i)`` for i = 0..N-1, after the
logits are reshaped by temperature, top-k and nucleus (top-p, Holtzman et al. 2020)
filtering, and optionally classifier-free guidance (Ho & Salimans 2022; on logits as in
Parti, Yu et al. 2022, and Make-A-Scene, Gafni et al. 2022).

Every sampler is one ``lax.fori_loop`` whose body is traced once, so a jitted sampler
compiles once whatever N is. Step i draws with ``fold_in(key, i)``, so the KV-cache path and
the full-recomputation path (and a sliding window whose window is the whole grid) draw the
same tokens from the same key: the check that the cache is exact.

The model is anything with ``num_tokens`` and ``__call__(prefix, image, *, context,
context_mask) -> (image_logits [B, n+1, V], _)``; the cached path also needs ``init_cache``,
``prefill`` and ``decode`` (:class:`zoo.nn.transformer.TokenDecoder`). Sample from the eval
view (``nnx.view(model, deterministic=True)``) and wrap the call in ``nnx.jit`` (or
``jax.jit`` of an ``nnx.merge``), with the filtering and guidance arguments static.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


def filter_logits(
    logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
    """Temperature, then top-k, then nucleus filtering; filtered-out tokens get -inf.

    Args:
      logits: ``[..., V]``.
      temperature: > 0; logits are divided by it (< 1 sharpens, > 1 flattens).
      top_k: keep the k largest logits (exactly k; ties broken by index); 0 keeps all.
      top_p: in (0, 1]; keep the smallest set of most probable tokens whose probability
        (after temperature and top-k) sums to at least top_p; the most probable token is
        always kept. 1 keeps all.

    Returns:
      ``[..., V]`` float32.
    """
    if isinstance(temperature, int | float) and temperature <= 0:
        raise ValueError(f"temperature must be > 0 (top_k=1 samples greedily); got {temperature}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 keeps all tokens); got {top_k!r}")
    if isinstance(top_p, int | float) and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1]; got {top_p}")
    logits = jnp.asarray(logits, jnp.float32) / temperature
    if 0 < top_k < logits.shape[-1]:
        _, kept = lax.top_k(logits, top_k)
        logits = jnp.where(_scatter_true(logits.shape, kept), logits, -jnp.inf)
    if not (isinstance(top_p, int | float) and top_p >= 1):
        order = jnp.argsort(-logits, axis=-1)  # most probable first
        probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
        # A token is needed iff the more probable ones do not yet reach top_p; the first
        # token's preceding mass is 0 < top_p, so it is always kept.
        needed = jnp.cumsum(probs, axis=-1) - probs < top_p
        keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), order, needed, -1, inplace=False)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def _scatter_true(shape, indices: jax.Array) -> jax.Array:
    """A bool array of ``shape``, True at ``indices`` along the last axis."""
    return jnp.put_along_axis(jnp.zeros(shape, bool), indices, True, -1, inplace=False)


def guided_logits(cond: jax.Array, uncond: jax.Array, scale: float) -> jax.Array:
    """Classifier-free guidance on logits: ``uncond + scale * (cond - uncond)``.

    ``scale = 1`` is the conditional model (no guidance), 0 the unconditional one, > 1 pushes
    away from the unconditional (Parti used 5). Ho & Salimans' ``w`` is ``scale - 1``. The
    result's softmax is the same whether logits or log-probabilities are mixed (the two
    differ by a per-row constant).
    """
    return uncond + scale * (cond - uncond)


class _Batch(NamedTuple):
    """What the model runs on: the conditional rows, then (if guided) the unconditional."""

    prefix: jax.Array  # [R, P] int32, R = B or 2B
    context: jax.Array | None  # [R, M, C]
    context_mask: jax.Array | None  # [R, M] bool
    guided: bool


def _model_batch(
    prefix, context, context_mask, guidance_scale, null_prefix, null_context, null_context_mask
) -> _Batch:
    """Stacks [conditional; unconditional] into one batch when ``guidance_scale != 1``."""
    prefix = jnp.asarray(prefix, jnp.int32)
    if not isinstance(guidance_scale, int | float):
        raise ValueError(f"guidance_scale must be a Python number; got {type(guidance_scale)}")
    if guidance_scale == 1:
        return _Batch(prefix, context, context_mask, False)
    if null_prefix is None and null_context is None:
        raise ValueError("guidance_scale != 1 needs null_prefix and/or null_context")
    if null_context is not None and context is None:
        raise ValueError("null_context given without context")
    uncond_prefix = prefix if null_prefix is None else jnp.broadcast_to(null_prefix, prefix.shape)
    prefix = jnp.concatenate([prefix, uncond_prefix.astype(jnp.int32)])
    if context is None:
        return _Batch(prefix, None, None, True)
    real = jnp.ones(context.shape[:2], bool)
    context_mask = real if context_mask is None else jnp.asarray(context_mask, bool)
    if null_context is None:
        null_context, null_context_mask = context, context_mask
    else:
        null_context = jnp.broadcast_to(null_context, context.shape)
        if null_context_mask is None:
            null_context_mask = real
        null_context_mask = jnp.broadcast_to(jnp.asarray(null_context_mask, bool), real.shape)
    context = jnp.concatenate([context, null_context.astype(context.dtype)])
    return _Batch(prefix, context, jnp.concatenate([context_mask, null_context_mask]), True)


def _token_sampler(
    key, guidance_scale, guided, temperature, top_k, top_p
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``draw(logits [R, V], step) -> [B] int32``: guidance, filtering, one categorical draw."""

    def draw(logits, step):
        if guided:
            cond, uncond = jnp.split(logits, 2)
            logits = guided_logits(cond, uncond, guidance_scale)
        logits = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return jax.random.categorical(jax.random.fold_in(key, step), logits).astype(jnp.int32)

    return draw


def _rows(tokens: jax.Array, batch: _Batch) -> jax.Array:
    """The sampled tokens for every row of the model batch (twice under guidance)."""
    return jnp.concatenate([tokens, tokens]) if batch.guided else tokens


def sample_tokens(
    model,
    prefix: jax.Array,
    key: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    context: jax.Array | None = None,
    context_mask: jax.Array | None = None,
    guidance_scale: float = 1.0,
    null_prefix: jax.Array | None = None,
    null_context: jax.Array | None = None,
    null_context_mask: jax.Array | None = None,
    use_cache: bool = True,
) -> jax.Array:
    """Draws all N image tokens of each sequence, one ``lax.fori_loop`` over positions.

    Args:
      model: a token decoder (module docstring), in eval mode.
      prefix: ``[B, P]`` int conditioning tokens.
      key: PRNG key; step i draws with ``fold_in(key, i)``.
      temperature, top_k, top_p: :func:`filter_logits` (after guidance).
      context: ``[B, M, C]`` cross-attention features; context_mask ``[B, M]`` bool.
      guidance_scale: :func:`guided_logits`' scale (a Python number); when != 1 the
        conditional rows and the unconditional ones (``null_prefix`` and/or ``null_context``
        in place of the condition) run as one ``[2B]`` batch each step.
      null_prefix: broadcastable to ``[B, P]`` (e.g. the null class id as a scalar).
      null_context: broadcastable to ``[B, M, C]`` (e.g. the empty caption encoded at length
        M); null_context_mask broadcastable to ``[B, M]``, default all True.
      use_cache: decode with the KV cache (one position per step); False recomputes the
        whole padded sequence each step (its causal mask hides the unsampled padding).

    Returns:
      ``[B, N]`` int32 image tokens.
    """
    batch = _model_batch(
        prefix, context, context_mask, guidance_scale, null_prefix, null_context, null_context_mask
    )
    draw = _token_sampler(key, guidance_scale, batch.guided, temperature, top_k, top_p)
    n = model.num_tokens
    tokens = jnp.zeros((jnp.shape(prefix)[0], n), jnp.int32)
    ctx = dict(context=batch.context, context_mask=batch.context_mask)
    if use_cache:
        cache = model.init_cache(batch.prefix.shape[0])
        logits, cache = model.prefill(batch.prefix, cache, **ctx)
        tokens = tokens.at[:, 0].set(draw(logits, 0))

        def cached_step(i, carry):
            tokens, cache = carry
            logits, cache = model.decode(_rows(tokens[:, i - 1], batch), i - 1, cache)
            return tokens.at[:, i].set(draw(logits, i)), cache

        return lax.fori_loop(1, n, cached_step, (tokens, cache))[0]

    def full_step(i, tokens):
        logits, _ = model(batch.prefix, _rows(tokens[:, : n - 1], batch), **ctx)
        return tokens.at[:, i].set(draw(lax.dynamic_index_in_dim(logits, i, 1, False), i))

    return lax.fori_loop(0, n, full_step, tokens)


def window_origin(i, j, grid: tuple[int, int], window: tuple[int, int]):
    """Top-left ``(top, left)`` of the ``window``-sized crop of ``grid`` used for token (i, j).

    The window is centred on (i, j) where it fits and clipped to the grid's edges (taming
    transformers, Esser et al. 2021, Sec. 3.2). Works on ints and traced int32 scalars.
    """
    (H, W), (h, w) = grid, window
    return jnp.clip(i - h // 2, 0, H - h), jnp.clip(j - w // 2, 0, W - w)


def sample_grid(
    model,
    prefix: jax.Array,
    key: jax.Array,
    *,
    grid: tuple[int, int],
    window: tuple[int, int],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    context: jax.Array | None = None,
    context_mask: jax.Array | None = None,
    guidance_scale: float = 1.0,
    null_prefix: jax.Array | None = None,
    null_context: jax.Array | None = None,
    null_context_mask: jax.Array | None = None,
) -> jax.Array:
    """Sliding-window sampling of a token grid larger than the model's (Esser et al. 2021).

    Token (i, j), in raster order over ``grid = (H, W)``, is drawn from the model run on the
    ``window = (h, w)`` crop at :func:`window_origin`, flattened in raster order, at the
    crop's local index ``r = (i - top) * w + (j - left)``. The crop's raster order agrees
    with the grid's on the crop (it spans whole rows of consecutive columns), so the crop's
    tokens before r are exactly those in earlier rows of the crop and in row i left of j:
    all already drawn; those from r on are not yet drawn, and the causal mask hides them.
    The model thus sees what it saw in training, a raster prefix of an h x w image.
    No KV cache: the window moves. Step ``i * W + j`` draws with ``fold_in(key, i * W + j)``,
    so ``grid == window`` reproduces ``sample_tokens(..., use_cache=False)``.

    Args:
      grid: ``(H, W)`` tokens to sample, ``H >= h`` and ``W >= w``.
      window: ``(h, w)``, the model's training grid (``h * w == model.num_tokens``).
      Others: as :func:`sample_tokens`.

    Returns:
      ``[B, H, W]`` int32 tokens.
    """
    (H, W), (h, w) = grid, window
    if h * w != model.num_tokens:
        raise ValueError(f"window {window} holds {h * w} tokens; the model has {model.num_tokens}")
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f"window {window} must fit in the grid {grid}")
    batch = _model_batch(
        prefix, context, context_mask, guidance_scale, null_prefix, null_context, null_context_mask
    )
    draw = _token_sampler(key, guidance_scale, batch.guided, temperature, top_k, top_p)
    b, n = jnp.shape(prefix)[0], h * w

    def step(p, tokens):
        i, j = p // W, p % W
        top, left = window_origin(i, j, grid, window)
        crop = lax.dynamic_slice(tokens, (jnp.int32(0), top, left), (b, h, w)).reshape(b, n)
        logits, _ = model(
            batch.prefix,
            _rows(crop[:, : n - 1], batch),
            context=batch.context,
            context_mask=batch.context_mask,
        )
        r = (i - top) * w + (j - left)
        token = draw(lax.dynamic_index_in_dim(logits, r, 1, False), p)
        return lax.dynamic_update_slice(tokens, token[:, None, None], (jnp.int32(0), i, j))

    return lax.fori_loop(0, H * W, step, jnp.zeros((b, H, W), jnp.int32))
