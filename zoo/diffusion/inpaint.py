"""GLIDE's text-driven inpainting (Nichol et al. 2022, sec. 3.3): a caption fills a masked region.

GLIDE fine-tunes its text-conditional model for inpainting: random regions of the training
images are erased and the model gets the remaining pixels and the mask as four extra input
channels, the known RGB image and a mask channel (the masked pixels zeroed, so the input is
``concat(x_t, known * (1 - mask), mask)``, ``2 C + 1`` channels).
Everything else is the text-conditional DDPM of :mod:`zoo.diffusion.objective`: the same
loss over *all* pixels (GLIDE does not restrict it to the hole), the caption dropped for
classifier-free guidance, the same samplers. An edit keeps the unmasked pixels exactly: the
sampler's x0 prediction is replaced by the known image outside the hole at every step
(:func:`known_denoiser`, cheap and keeping the hole's borders consistent with them) and the
known pixels are pasted on the result (:func:`paste`).

Masks are ``[..., H, W, 1]`` float32 in {0, 1}, 1 = the region to fill. The trainer's samples
are edits of ``shapes`` images (:func:`edit_tasks`): one object's grid cell erased and a
caption at the same position with another shape or colour asked for, so the eval's caption
match scores the edits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.diffusion.ddpm import eps_from_x0, predict_x0, prediction_target
from zoo.diffusion.sampling import guided_denoiser
from zoo.diffusion.sampling import sample as run_sampler
from zoo.diffusion.schedules import Schedule

# A shape's extent beyond its 3x3 grid cell, in cells: the jitter (0.08) plus the triangle's
# circumradius (1.1 x 0.40) reach 0.52 cell from the centre, and the anti-aliased edge one
# more output pixel; a quarter cell covers both at the sizes we train (16, 32).
CELL_MARGIN = 0.25
# The share of training masks that are a grid cell rather than a random box.
CELL_PROB = 0.5


def cell_mask(position: jax.Array, size: int, margin: float = CELL_MARGIN) -> jax.Array:
    """The pixels of ``shapes``' grid cell ``position`` (int in [0, 9), row-major), widened
    by ``margin`` cells on each side: ``[size, size, 1]`` float32 in {0, 1}."""
    row, col = jnp.divmod(jnp.asarray(position, jnp.int32), 3)
    centres = (jnp.arange(size) + 0.5) * 3.0 / size  # pixel centres in cell units
    rows = (centres >= row - margin) & (centres <= row + 1 + margin)
    cols = (centres >= col - margin) & (centres <= col + 1 + margin)
    return (rows[:, None] & cols[None, :]).astype(jnp.float32)[..., None]


def box_mask(top, left, bottom, right, size: int) -> jax.Array:
    """Pixels ``top <= y < bottom``, ``left <= x < right``: ``[size, size, 1]`` float32."""
    idx = jnp.arange(size)
    rows = (idx >= top) & (idx < bottom)
    cols = (idx >= left) & (idx < right)
    return (rows[:, None] & cols[None, :]).astype(jnp.float32)[..., None]


def random_mask(key: jax.Array, size: int, cell_prob: float = CELL_PROB) -> jax.Array:
    """One training mask ``[size, size, 1]`` float32 in {0, 1} (1 = fill).

    GLIDE erases random regions; we use axis-aligned boxes with each side uniform in
    ``[ceil(size / 4), floor(3 size / 4)]`` pixels at a uniform position, and, with
    probability ``cell_prob``, the (widened) grid cell of a random ``shapes`` position
    instead: the edits we sample and score erase exactly such a cell, so they are then in
    the training distribution rather than a box shape the model rarely saw.
    """
    k_cell, k_pos, k_h, k_w, k_top, k_left = jax.random.split(key, 6)
    lo, hi = max(1, -(-size // 4)), max(1, (3 * size) // 4)
    h = jax.random.randint(k_h, (), lo, hi + 1)
    w = jax.random.randint(k_w, (), lo, hi + 1)
    top = jax.random.randint(k_top, (), 0, size - h + 1)
    left = jax.random.randint(k_left, (), 0, size - w + 1)
    box = box_mask(top, left, top + h, left + w, size)
    cell = cell_mask(jax.random.randint(k_pos, (), 0, 9), size)
    return jnp.where(jax.random.uniform(k_cell) < cell_prob, cell, box)


def random_masks(key: jax.Array, n: int, size: int, cell_prob: float = CELL_PROB) -> jax.Array:
    """``n`` masks of :func:`random_mask`: ``[n, size, size, 1]`` float32 in {0, 1}."""
    return jax.vmap(lambda k: random_mask(k, size, cell_prob))(jax.random.split(key, n))


def paste(images: jax.Array, known: jax.Array, mask: jax.Array) -> jax.Array:
    """``images`` inside the mask, ``known`` outside it (exactly): ``[B, H, W, C]``."""
    return jnp.where(mask > 0, images, known.astype(images.dtype))


class Inpainter(nnx.Module):
    """``(x [B, H, W, C], t [B], *cond, known [B, H, W, C], mask [B, H, W, 1]) -> [B, H, W, C]``.

    ``net`` is a U-Net (or text U-Net) built with ``2 C + 1`` input channels and ``C``
    output channels; it sees ``concat(x, known with the masked pixels zeroed, mask)``, so
    whatever ``known`` holds inside the mask never reaches it.
    """

    def __init__(self, net: nnx.Module):
        self.net = net

    def __call__(self, x, t, *cond, known, mask, dropout_key=None):
        mask = mask.astype(x.dtype)
        visible = jnp.where(mask > 0, 0.0, known.astype(x.dtype))
        inputs = jnp.concatenate([x, visible, mask], axis=-1)
        return self.net(inputs, t, *cond, dropout_key=dropout_key)


def known_denoiser(denoise, sched: Schedule, known, mask, prediction: str):
    """``denoise`` with its x0 prediction replaced by ``known`` outside ``mask``.

    The output is re-expressed in the ``prediction`` parametrisation from (x0', eps') with
    eps' = eps_from_x0(x_t, x0'), so the sampler's next x_s keeps the known pixels on the
    forward process of the known image (the replacement step; a DDIM chain ends on them).
    ``known``, ``mask``: ``[B, ...]`` like the sampler's x.
    """

    def replaced(x, t):
        x0 = paste(predict_x0(sched, x, t, denoise(x, t), prediction), known, mask)
        return prediction_target(sched, x0, eps_from_x0(sched, x, t, x0), t, prediction)

    return replaced


def inpaint(
    d,
    net,
    sched: Schedule,
    rng: jax.Array,
    known: jax.Array,
    mask: jax.Array,
    tokens: jax.Array | None = None,
    null: jax.Array | None = None,
    guidance_scale: float = 1.0,
    replace_known: bool = True,
) -> jax.Array:
    """Edits ``known``: samples the masked region given the rest and the caption.

    Args:
      d: ``config.diffusion`` (sampler, sample_steps, prediction, clipping...).
      net: an :class:`Inpainter` (eval mode).
      sched: the run's schedule.
      rng: the sampler's key.
      known: ``[n, H, W, C]`` float32 in [-1, 1], the images to edit.
      mask: ``[n, H, W, 1]`` in {0, 1}, 1 = the region to fill.
      tokens: ``[n, L]`` int32 caption ids of the wanted content, or None (unconditional).
      null: the empty caption shaped like ``tokens`` (guidance_scale != 1).
      guidance_scale: classifier-free guidance (GLIDE eq. 4).
      replace_known: replace the x0 prediction outside the mask at each step
        (:func:`known_denoiser`).

    Returns:
      ``[n, H, W, C]`` in [-1, 1], equal to ``known`` outside the mask. Jit-able (close over
      ``d``, ``sched`` and the guidance scale).
    """
    denoise = guided_denoiser(net, tokens, null, guidance_scale, {"known": known, "mask": mask})
    if replace_known:
        denoise = known_denoiser(denoise, sched, known, mask, d.prediction)
    images = run_sampler(d, denoise, sched, rng, tuple(known.shape))
    return paste(jnp.clip(images, -1.0, 1.0), known, mask)


def source_bank(size: int, channels: int, seed: int = 0) -> np.ndarray:
    """One ``shapes`` image per label (:func:`zoo.data.shapes.label_of`), drawn once with
    :func:`zoo.data.shapes.draw` (numpy, outside jit): ``[162, size, size, channels]``
    float32 in [-1, 1], the sources of :func:`edit_tasks`."""
    from zoo.data import shapes
    from zoo.data.preprocess import prepare_image

    images = []
    for label in range(shapes.NUM_CLASSES):
        image = shapes.draw(
            *shapes.attributes_of(label), size, np.random.default_rng([seed, label])
        )
        images.append(prepare_image(image, size, channels))
    return np.stack(images)


def edit_tasks(rng: jax.Array, n: int, bank: jax.Array, table_tokens: jax.Array):
    """``n`` random edits of ``shapes`` images: erase one object's cell, ask for another.

    The source caption is uniform over the 162 labels; the target keeps its position and
    changes the shape, the colour or both (uniform over the 17 other (shape, colour) pairs).

    Args:
      rng: a key.
      n: the number of edits.
      bank: :func:`source_bank` ``[162, S, S, C]``.
      table_tokens: ``[162, L]`` int32 caption ids by label
        (:func:`zoo.data.shapes.caption_table`).

    Returns:
      ``({"known": [n, S, S, C], "mask": [n, S, S, 1]}, target tokens [n, L], fields)``;
      fields: the targets' ``label``, ``shape``, ``color``, ``position`` ``[n]`` int32 (what
      the caption match scores) and the sources' ``source_label``.
    """
    from zoo.data.shapes import COLORS, POSITIONS, SHAPES

    k_source, k_change = jax.random.split(rng)
    pairs = len(SHAPES) * len(COLORS)
    source = jax.random.randint(k_source, (n,), 0, bank.shape[0])
    pair, position = jnp.divmod(source, len(POSITIONS))  # label = pair * 9 + position
    target_pair = (pair + jax.random.randint(k_change, (n,), 1, pairs)) % pairs
    target = target_pair * len(POSITIONS) + position
    shape, color = jnp.divmod(target_pair, len(COLORS))
    size = bank.shape[1]
    extra = {"known": bank[source], "mask": jax.vmap(lambda p: cell_mask(p, size))(position)}
    fields = {
        "label": target,
        "shape": shape,
        "color": color,
        "position": position,
        "source_label": source,
    }
    return extra, table_tokens[target], fields


def edit_sampler(d, sched: Schedule, guidance_scale: float, bank, table_tokens):
    """The objective's ``sample`` for model ``inpaint``: ``(net, rng, n) -> samples``.

    ``net`` is the trained :class:`Inpainter` (eval mode); the samples are ``n`` edits of
    :func:`edit_tasks` drawn with ``config.diffusion`` ``d`` and ``guidance_scale``:
    ``{"image": [n, S, S, C] in [-1, 1], "known", "mask", "label", "shape", "color",
    "position", "source_label"}``, the attributes those of the *target* captions.
    """

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def edits(graphdef, state, rng, n):
        k_task, k_sample = jax.random.split(rng)
        extra, tokens, fields = edit_tasks(k_task, n, bank, table_tokens)
        net = nnx.merge(graphdef, state)
        null = jnp.zeros_like(tokens)  # the empty caption
        images = inpaint(
            d,
            net,
            sched,
            k_sample,
            **extra,
            tokens=tokens,
            null=null,
            guidance_scale=guidance_scale,
        )
        return {"image": images, **extra, **fields}

    return lambda net, rng, n: edits(*nnx.split(net), rng, int(n))


def edit_figure(samples: dict) -> jax.Array:
    """Rows (source, source with the hole grey, edit) of ``samples`` with ``image``,
    ``known`` and ``mask``: ``[3, n, H, W, C]`` in [-1, 1]."""
    known, mask = samples["known"], samples["mask"]
    return jnp.stack([known, paste(jnp.zeros_like(known), known, mask), samples["image"]])


def check_config(config) -> None:
    """Refuse an ``inpaint`` config the objective cannot serve, before building it."""
    d = config.diffusion
    if d.condition != "text" or config.data.name != "shapes":
        raise ValueError(
            "model 'inpaint' edits shapes images from captions: set data.name='shapes' and "
            f"diffusion.condition='text' (got {config.data.name!r}, {d.condition!r})"
        )
    if d.bpd_eval != "none":
        raise ValueError("an inpainting model has no bits/dim eval: set diffusion.bpd_eval='none'")
