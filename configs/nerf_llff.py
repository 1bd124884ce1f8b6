r"""NeRF (Mildenhall et al. 2020; survey chapter 5) on a forward-facing LLFF scene, in NDC.

    python -m zoo.main --config=configs/nerf_llff.py --workdir=runs/fern \
        --config.data.dir=/data/nerf_llff_data/fern
    python -m zoo.nerf.render --workdir=runs/fern

The paper's LLFF setting: the Blender model (L = 10 / 4, 8 x 256 MLP with the
input again after the fifth layer, 64 coarse + 128 fine samples, 4096 rays per
step, Adam 5e-4 decaying exponentially to 5e-5) on rays mapped to normalised
device coordinates (appendix C; near/far 0/1), images downscaled 8x (height
378 for the 4032 x 3024 originals), every 8th image held out, black
background. data.dir has no default: LLFF scenes are real photographs.

The paper also adds unit Gaussian noise to the raw density while training on
LLFF; this zoo's field applies ReLU inside the MLP and does not.

`:tiny` trains a few steps in seconds on a small LLFF folder (tests write one
and pass --config.data.dir).
"""

from zoo.nerf.objective import nerf_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "12-pixel-high views, 2 x 32 MLP, 4 steps (tests write an LLFF folder)",
}


def get_config(arg: str | None = None):
    c = nerf_config()
    c.data.update(
        dict(
            name="llff",
            dir="",
            image_size=378,
            white_background=False,
            ndc=True,
            holdout_every=8,
        )
    )
    if arg == "tiny":
        c.data.update(dict(image_size=12, batch_size=64, num_eval_views=0))
        c.nerf.update(
            dict(
                depth=2,
                width=32,
                skip=0,
                view_width=16,
                pos_freqs=4,
                dir_freqs=2,
                num_coarse=8,
                num_fine=8,
                render_chunk=128,
            )
        )
        c.optim.lr = 5e-3
        c.train.update(
            dict(
                steps=4,
                log_every=2,
                sample_every=4,
                eval_every=4,
                checkpoint_every=2,
                num_samples=2,
            )
        )
        c.eval.update(dict(batch_size=2, num_examples=0))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of nerf_llff; known: {', '.join(VARIANTS)}")
    return c
