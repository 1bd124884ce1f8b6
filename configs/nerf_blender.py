r"""NeRF (Mildenhall et al. 2020; survey chapter 5) on a Blender-format scene.

    python -m zoo.main --config=configs/nerf_blender.py --workdir=runs/nerf_procedural
    python -m zoo.main --config=configs/nerf_blender.py --workdir=runs/lego \
        --config.data.dir=/data/nerf_synthetic/lego --config.data.image_size=800
    python -m zoo.main --config=configs/nerf_blender.py:small --workdir=runs/nerf_small
    python -m zoo.nerf.render --workdir=runs/lego

The default is the paper's model (L = 10 / 4, 8 x 256 MLP, input again after
the fifth layer, 64 coarse + 128 fine samples, 4096 rays per step, Adam 5e-4
decaying exponentially to 5e-5, white background) on the zoo's procedural
64x64 scene (data.dir ""; set data.dir and data.image_size for a real scene,
e.g. 800 or 400 for lego). It reports eval/psnr and eval/ssim on the test
views and writes rendered test views to `<workdir>/samples/`.

`:small` is sized for 2 CPU cores: a 4 x 128 MLP (L = 8 / 4, no skip), 48
stratified samples per ray inside the scene's bounding sphere and 1024 rays
per step for 2800 steps on the procedural 64x64 scene (aimed at >= 28 dB test
PSNR within 20 minutes; see the run's eval/psnr). Its bound_radius 1.5 fits the
procedural scene; set --config.nerf.bound_radius=0 (or the scene's radius) for
others. `:tiny` trains a few steps in seconds (tests).
"""

from zoo.nerf.objective import nerf_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "small": "4 x 128 MLP, 48 samples, 1024 rays, for 2 CPU cores: 2,800 steps in ~19 min",
    "tiny": "16x16 views, 2 x 32 MLP, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = nerf_config()
    c.data.update(
        dict(
            name="blender",
            dir="",
            scene_cache="~/.cache/zoo/scenes",
            image_size=64,
            white_background=True,
        )
    )
    if arg == "small":
        # Sized for 2 CPU cores: 4 x 128 MLP (L = 8 / 4, no skip), 48 stratified samples on
        # each ray's chord of the scene's bounding sphere (no fine pass: on a CPU budget the
        # samples pay more as rays than as a second pass), 1024 rays per step, Adam 1e-3
        # decaying to 1e-4. About 2.5 steps/s on 2 cores: 2800 steps take some 19 minutes.
        c.nerf.update(
            dict(
                depth=4,
                width=128,
                skip=-1,
                view_width=64,
                pos_freqs=8,
                num_coarse=48,
                num_fine=0,
                bound_radius=1.5,
                render_chunk=4096,
            )
        )
        c.data.batch_size = 1024
        c.optim.lr = 1e-3
        c.train.update(
            dict(
                steps=2800,
                log_every=100,
                sample_every=2800,
                eval_every=400,
                checkpoint_every=400,
            )
        )
    elif arg == "tiny":
        c.data.update(dict(image_size=16, batch_size=64, num_eval_views=2))
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
        c.eval.update(dict(batch_size=2, num_examples=2))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of nerf_blender; known: {', '.join(VARIANTS)}")
    return c
