"""The original GAN (Goodfellow et al. 2014) on a ring of 8 Gaussians, 2-D.

    python -m zoo.main --config=configs/gan_ring.py --workdir=runs/gan_ring
    python -m zoo.main --config=configs/gan_ring.py --config.gan.g_loss=saturating \
        --config.gan.d_steps=2 --workdir=runs/gan_ring_sat_k2

MLP generator and discriminator, the minimax loss of eq. 2.1 with the
non-saturating (default) or saturating generator loss and k = ``gan.d_steps``
discriminator updates per generator update (Algorithm 2.1). Reports modes
covered and the share of high-quality samples (eval/modes_covered,
eval/high_quality) and writes a density picture of the samples
(``samples/scatter_step_*.png``). ``experiments/evals/gan_ring_sweep.py``
runs both losses at several k. ``:tiny`` runs in seconds.
"""

import ml_collections

from zoo.gan.config import gan_base_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "32-unit MLPs, batch 32, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = gan_base_config("gan")
    c.data.update(dict(name="ring", batch_size=512, ring_radius=2.0, ring_std=0.02))
    c.net.update(dict(hidden=128, depth=2))
    # The 8-Gaussians setup of Metz et al. (2017): Adam with beta1 0.5, G at 1e-3, D at 1e-4.
    c.optim.update(dict(lr=1e-3, b1=0.5))
    c.optim_d = ml_collections.ConfigDict(dict(lr=1e-4))
    c.train.update(
        dict(steps=5000, log_every=250, sample_every=2500, eval_every=2500, checkpoint_every=5000)
    )
    c.train.num_samples = 64
    c.eval.num_samples = 10000
    if arg == "tiny":
        c.net.update(dict(hidden=32, depth=2))
        c.data.batch_size = 32
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=4))
        c.eval.num_samples = 256
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of gan_ring; known: {', '.join(VARIANTS)}")
    return c
