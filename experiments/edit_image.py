"""Edit an image with a trained inpainting run (GLIDE sec. 3.3): refill a box from a caption.

    python experiments/edit_image.py runs/glide_inpaint_shapes --image in.png \
        --box 0,0,40,40 --caption "a blue circle at the top left" --out edited.png
    python experiments/edit_image.py runs/glide_inpaint_shapes \
        --source_caption "a red square at the top left" --box 0,0,7,7 \
        --caption "a blue circle at the top left" --out edited.png --num 4 --guidance 3

Reads the run's config.json and newest checkpoint (EMA parameters). ``--image`` is a square
image of any size, resized to the run's; ``--source_caption`` draws the input instead, at the
run's size. ``--box TOP,LEFT,BOTTOM,RIGHT`` is in the input's pixels (bottom and right
exclusive); every model pixel it touches is refilled, the others are kept exactly. Writes
input | input with the hole grey | ``--num`` edits side by side (enlarged to >= 128 pixels
high) and prints one JSON line.
"""

import argparse
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from zoo import registry
from zoo.data import shapes
from zoo.data.preprocess import prepare_image
from zoo.data.text import words_of
from zoo.diffusion.inpaint import box_mask, inpaint, paste
from zoo.diffusion.objective import schedule_from_config
from zoo.engine.config import load_run_config
from zoo.engine.loop import Trainer
from zoo.engine.step import Models


def caption_tokens(text: str, flag: str = "--caption") -> np.ndarray:
    """``[1, L]`` int32 ids of a caption in the shapes vocabulary; SystemExit otherwise."""
    words = words_of(text)
    unknown = sorted({w for w in words if w not in shapes.VOCABULARY})
    if not words or unknown:
        raise SystemExit(
            f"{flag} {text!r}: {'unknown words ' + str(unknown) if unknown else 'no words'}; "
            f"the shapes captions use {' '.join(shapes.VOCABULARY)}"
        )
    if len(words) > shapes.SHAPES_MAX_LEN:
        raise SystemExit(f"{flag} {text!r} has more than {shapes.SHAPES_MAX_LEN} words")
    return shapes.SHAPES_TOKENIZER.encode([text], shapes.SHAPES_MAX_LEN)


def source_image(args, size: int, channels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(the input ``[size, size, C]`` in [-1, 1], its own (height, width) for the box)."""
    if args.source_caption is not None:
        caption_tokens(args.source_caption, "--source_caption")
        triples = {
            " ".join(words_of(shapes.caption(*shapes.attributes_of(k)))): shapes.attributes_of(k)
            for k in range(shapes.NUM_CLASSES)
        }
        attributes = triples.get(" ".join(words_of(args.source_caption)))
        if attributes is None:
            raise SystemExit(
                f"--source_caption {args.source_caption!r} is no shapes caption: "
                "write one like 'a red circle at the top left'"
            )
        drawn = shapes.draw(*attributes, size, np.random.default_rng(args.seed))
        return prepare_image(drawn, size, channels), (size, size)
    if not os.path.isfile(args.image):
        raise SystemExit(f"--image {args.image}: no such file")
    try:
        with Image.open(args.image) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise SystemExit(f"--image {args.image}: not a readable image ({err})") from None
    if image.width != image.height:
        raise SystemExit(
            f"--image {args.image} is {image.width}x{image.height}: the run edits square "
            f"{size}x{size} images, crop it square first"
        )
    return prepare_image(image, size, channels), (image.height, image.width)


def mask_of(box: str, shape: tuple[int, int], size: int) -> np.ndarray:
    """``[size, size, 1]``: the model pixels that the input-pixel box touches."""
    try:
        top, left, bottom, right = (int(v) for v in box.split(","))
    except ValueError:
        raise SystemExit(f"--box {box!r}: want TOP,LEFT,BOTTOM,RIGHT integers") from None
    h, w = shape
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise SystemExit(
            f"--box {box} does not lie inside the {h}x{w} input (0 <= TOP < BOTTOM <= {h}, "
            f"0 <= LEFT < RIGHT <= {w})"
        )
    rows = (math.floor(top * size / h), math.ceil(bottom * size / h))
    cols = (math.floor(left * size / w), math.ceil(right * size / w))
    return np.asarray(box_mask(rows[0], cols[0], rows[1], cols[1], size))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", help="a run of configs/glide_inpaint_shapes.py")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="a square image file")
    source.add_argument("--source_caption", help="draw the input from this shapes caption")
    p.add_argument("--box", required=True, help="TOP,LEFT,BOTTOM,RIGHT in the input's pixels")
    p.add_argument("--caption", required=True, help="what to put in the box")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=int, default=1, help="edits to draw")
    args = p.parse_args(argv)
    try:
        config = load_run_config(args.workdir)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    if config.model != "inpaint":
        raise SystemExit(f"{args.workdir} holds a {config.model!r} run, not an 'inpaint' one")
    if args.num < 1:
        raise SystemExit(f"--num must be >= 1, got {args.num}")
    size, channels = int(config.data.image_size), int(config.data.channels)
    tokens = caption_tokens(args.caption)
    image, shape = source_image(args, size, channels)
    mask = mask_of(args.box, shape, size)
    trainer = Trainer(config, args.workdir, registry.build_objective(config))
    if not trainer.checkpointer.steps():
        raise SystemExit(f"no checkpoint in {args.workdir}: train it first")
    state, step = trainer.restore_or_init()
    d, sched = config.diffusion, schedule_from_config(config.diffusion)
    guidance = float(d.guidance_scale if args.guidance is None else args.guidance)

    @jax.jit
    def edit(params, rest, frozen, rng, known, mask, tokens):
        net = Models(trainer.graphs, params, rest, frozen)("model", train=False)
        return inpaint(d, net, sched, rng, known, mask, tokens, jnp.zeros_like(tokens), guidance)

    n = args.num
    known, masks = np.repeat(image[None], n, 0), np.repeat(mask[None], n, 0)
    tokens = np.repeat(tokens, n, 0)
    edits = edit(*trainer.eval_params(state), jax.random.key(args.seed), known, masks, tokens)
    hole = paste(np.zeros_like(image), image, mask)
    row = np.concatenate([image, np.asarray(hole), *np.asarray(edits)], axis=1)
    pixels = np.round((np.clip(row, -1, 1) + 1) * 127.5).astype(np.uint8)
    scale = max(1, -(-128 // size))
    pixels = pixels.repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(args.out)
    summary = dict(out=args.out, step=step, caption=args.caption, guidance=guidance, num=n)
    print(json.dumps({**summary, "masked_pixels": int(mask.sum())}))


if __name__ == "__main__":
    main()
