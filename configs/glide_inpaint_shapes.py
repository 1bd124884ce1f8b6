"""GLIDE's text-driven inpainting on the bundled `shapes`: erase a region, fill it from a caption.

    python -m zoo.main --config=configs/glide_inpaint_shapes.py --workdir=runs/glide_inpaint_shapes

The `glide_shapes` model (16x16, a caption transformer trained with the U-Net, 20 % empty
captions for classifier-free guidance, DDIM with 50 steps) given two more inputs on its
channels: the image with a random region erased and the mask (GLIDE sec. 3.3). Half the
training masks are random boxes (sides 1/4 to 3/4 of the image), half the grid cell of a
random position, the region an edit of one object erases. The samples and the eval are edits:
a shape drawn for a random caption, its cell erased, and a caption at the same position with
another shape or colour asked for; `eval/caption_match` scores the edits against the target
captions (500 of them), and the pixels outside the cell are the source's, exactly. Edit your
own image (or one drawn from a caption) with a trained run:

    python experiments/edit_image.py runs/glide_inpaint_shapes \
        --source_caption "a red circle at the top left" --box 0,0,7,7 \
        --caption "a blue square at the top left" --out edited.png --num 4

`:tiny` runs in seconds.
"""

from zoo.config_files import config_module

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "a width-16 U-Net and a 1-layer caption encoder, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    if arg is not None and arg not in VARIANTS:
        raise ValueError(
            f"unknown variant {arg!r} of glide_inpaint_shapes; known: {', '.join(VARIANTS)}"
        )
    # glide_shapes' network, data, schedule and training
    c = config_module("glide_shapes").get_config(arg)
    c.model = "inpaint"
    c.diffusion.bpd_eval = "none"  # the bound of an inpainting model would need its masks
    return c
