"""CLIP guidance in the sampler (GLIDE sec. 2.4): a caption model's ancestral samples steered
by a noise-aware CLIP run loaded as ``config.stages.clip``, and the config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clip_shapes, glide_shapes
from zoo import registry
from zoo.data import shapes
from zoo.diffusion import clip_guidance
from zoo.diffusion.ddpm import ancestral_sample
from zoo.diffusion.schedules import make_schedule
from zoo.engine.loop import Trainer
from zoo.engine.step import Models
from zoo.main import run


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """clip_shapes:noisy_tiny (glide_shapes:tiny's forward process) trained for 2 steps."""
    workdir = str(tmp_path_factory.mktemp("noisy_clip"))
    config = clip_shapes.get_config("noisy_tiny")
    config.train.update(dict(steps=2, eval_every=0, checkpoint_every=2))
    run(config, workdir)
    return workdir


def guided_config(clip_run, scale):
    config = glide_shapes.get_config("tiny")
    config.diffusion.update(dict(sampler="ancestral", clip_guidance_scale=scale))
    config.stages.clip.workdir = clip_run if scale else ""
    config.train.update(dict(sample_every=0, eval_every=0))
    config.eval.num_samples = 0
    return config


def test_mean_shift_moves_every_ancestral_step_by_what_it_returns():
    """A shift of +c on every step's mean moves x_0 by c * sum over steps of the product of
    the later steps' x_t coefficients; with a zero denoiser and no clipping that is linear,
    so the shifted sample minus the plain one is the shifted run of a zero start."""
    sched = make_schedule("cosine", 20)
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    kw = dict(prediction="eps", clip_denoised=False)
    rng, shape = jax.random.key(0), (2, 4, 4, 1)
    plain = ancestral_sample(zero, sched, rng, shape, **kw)
    same = ancestral_sample(zero, sched, rng, shape, mean_shift=lambda m, v, x, t: m, **kw)
    np.testing.assert_array_equal(same, plain)
    seen = []

    def shift(mean, variance, x, t):
        seen.append(variance.shape)
        return mean + 0.1 * variance

    moved = ancestral_sample(zero, sched, rng, shape, mean_shift=shift, **kw)
    assert seen == [(2, 1, 1, 1)]  # traced once inside the scan, a per-example variance
    assert float(jnp.min(moved - plain)) > 0  # every step pushed up by 0.1 * Sigma_t > 0


@pytest.mark.slow
def test_clip_guidance_raises_the_clip_similarity_of_the_samples(clip_run, tmp_path):
    """The same model, seed and captions, sampled with and without CLIP guidance: the
    guided samples score higher under the CLIP that guided them (on x_0, t = 0). (The pure
    gradient step is checked in the default tier: tests/diffusion/test_clip.py.)"""
    samples = {}
    for scale in (0.0, 200.0):
        config = guided_config(clip_run, scale)
        trainer = Trainer(config, str(tmp_path / f"s{scale}"), registry.build_objective(config))
        state, _ = trainer.restore_or_init()  # the same init (seed) for both
        samples[scale] = trainer.samples(state, 8, seed_offset=0)
        if scale:
            params, rest, frozen = trainer.eval_params(state)
            clip = Models(trainer.graphs, params, rest, frozen)("clip", train=False)
    labels = np.asarray(samples[0.0]["label"])
    np.testing.assert_array_equal(labels, samples[200.0]["label"])  # the same captions
    tokens = jnp.asarray(shapes.caption_table()[0][labels])
    t0 = jnp.zeros((len(labels),), jnp.int32)
    plain, guided = (
        clip_guidance.clip_similarity(clip, jnp.asarray(s["image"]), t0, tokens)
        for s in (samples[0.0], samples[200.0])
    )
    print("similarity without / with guidance:", float(jnp.mean(plain)), float(jnp.mean(guided)))
    assert float(jnp.mean(guided)) > float(jnp.mean(plain)) + 0.01, (plain, guided)


@pytest.mark.slow  # trains a CLIP and a GLIDE run for a step or two (~25 s)
def test_clip_guidance_config_errors_name_the_fix(clip_run, tmp_path):
    config = guided_config(clip_run, 3.0)
    config.diffusion.sampler = "ddim"
    with pytest.raises(ValueError, match="set diffusion.sampler='ancestral'"):
        registry.build_objective(config)
    config = guided_config(clip_run, 0.0)
    config.stages.clip.workdir = clip_run
    with pytest.raises(ValueError, match="clip_guidance_scale is 0"):
        registry.build_objective(config)
    config = guided_config(clip_run, 3.0)
    config.stages.clip.workdir = ""
    with pytest.raises(ValueError, match=r"config.stages.clip.workdir must name"):
        registry.build_objective(config)
    config = guided_config(clip_run, 3.0)
    config.diffusion.update(dict(schedule="linear", timesteps=1000))
    with pytest.raises(ValueError, match="trained on x_t of the forward process"):
        registry.build_objective(config)
    glide = str(tmp_path / "glide")
    plain = guided_config(clip_run, 0.0)
    plain.train.steps = 1
    run(plain, glide)
    config = guided_config(clip_run, 3.0)
    config.stages.clip.workdir = glide
    with pytest.raises(ValueError, match="CLIP guidance needs a 'clip' run"):
        registry.build_objective(config)
