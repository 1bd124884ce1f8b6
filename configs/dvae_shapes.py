"""DALL-E's discrete VAE on the bundled `shapes` (16x16): the tokenizer under `dalle_shapes`.

    python -m zoo.main --config=configs/dvae_shapes.py --workdir=runs/dvae_shapes

16x16 images -> 8x8 codes of 256 (f = 2; 16x16 keeps a 2-core run short). Trained on the
evidence lower bound (eq. 3.1) with the Gumbel-softmax relaxation: temperature annealed from
1 towards 1/16 and the KL weight to the uniform prior ramped up, as in Ramesh et al. (2021)
on a shorter clock. Tokenizing takes the argmax; held-out PSNR is measured through those
hard codes. Reconstruction L1 and a final KL weight of 0.01, measured on the 2-core VM
(README; PSNR / reconstruction caption match after 4,000 steps): L2 with KL 1.0 28.1 dB /
0.36, L2 with 0.1 30.4 / 0.61, L2 with 0.01 32.2 / 0.66, L1 with 0.01 34.6 / 0.67. Even the
last mixes up circles and squares (shape accuracy 0.68). `:tiny` runs in seconds.
"""

from zoo.autoregressive.config import tokenizer_config

# get_config's arguments (`python -m zoo.main --list` prints them); None: the default.
VARIANTS = {
    "tiny": "width 8, 16 codes, 4 steps: seconds (tests)",
}


def get_config(arg: str | None = None):
    c = tokenizer_config("dvae")
    c.data.update(dict(name="shapes", image_size=16, channels=3, batch_size=32))
    c.vq.update(
        dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), embed_dim=32,
             num_codes=256)
    )  # fmt: skip
    c.dvae.update(dict(tau_anneal_steps=3000, kl_weight=0.01, kl_ramp_steps=500))
    c.vq_loss.reconstruction = "l1"
    c.optim.update(dict(lr=1e-3, b1=0.9, b2=0.999, warmup_steps=100, grad_clip=1.0))
    c.train.update(
        dict(steps=4000, log_every=100, sample_every=1000, eval_every=1000, checkpoint_every=1000)
    )
    c.eval.update(dict(batch_size=100, num_examples=500))
    if arg == "tiny":
        c.vq.update(dict(ch=8, embed_dim=4, num_codes=16, attn_resolutions=()))
        c.dvae.update(dict(tau_anneal_steps=4, kl_ramp_steps=2))
        c.data.update(dict(batch_size=8, image_size=16, num_train=64, num_eval=16))
        c.optim.warmup_steps = 1
        c.train.update(dict(steps=4, log_every=2, sample_every=4, eval_every=4, checkpoint_every=2))
        c.eval.update(dict(batch_size=16, num_examples=16))
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of dvae_shapes; known: {', '.join(VARIANTS)}")
    return c
