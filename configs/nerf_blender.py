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

`:small` is sized for 2 CPU cores: a 4 x 128 MLP (L = 8 / 4, no skip), 32 + 32
samples and 512 rays per step for 2500 steps on the procedural 64x64 scene
(aimed at >= 28 dB test PSNR within about 20 minutes; see the run's
eval/psnr). `:tiny` trains a few steps in seconds (tests).
"""

from zoo.nerf.objective import nerf_config


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
        # Measured on 2 shared CPU cores: ~0.4-0.75 s per step (2500 steps: 17-30 min).
        c.nerf.update(
            dict(
                depth=4,
                width=128,
                skip=-1,
                view_width=64,
                pos_freqs=8,
                num_coarse=32,
                num_fine=32,
                render_chunk=2048,
            )
        )
        c.data.batch_size = 512
        c.train.update(
            dict(
                steps=2500,
                log_every=100,
                sample_every=2500,
                eval_every=2500,
                checkpoint_every=500,
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
        raise ValueError(f"unknown variant {arg!r} of nerf_blender; known: small, tiny")
    return c
