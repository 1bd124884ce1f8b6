"""Classifier-free guidance and the sampler dispatch of zoo.diffusion.sampling."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.diffusion.helpers import gaussian_denoiser
from tests.diffusion.test_samplers import N, chain_moments, check_moments
from tests.diffusion.test_text_unet import Recorder
from zoo.diffusion.ddim import ddim_timesteps
from zoo.diffusion.sampling import guided_denoiser, sample
from zoo.diffusion.schedules import make_schedule, respace


def test_guidance_scale_zero_is_the_unconditional_model_and_one_the_conditional():
    net = Recorder()
    x = jnp.ones((4, 2, 2, 1))
    t = jnp.zeros((4,), jnp.int32)
    cond, null = jnp.full((2, 3), 4), jnp.zeros((2, 3), jnp.int32)  # tiled 2 -> 4 examples
    assert float(guided_denoiser(net, cond, null, 0.0)(x, t)[0, 0, 0, 0]) == pytest.approx(1.0)
    assert float(guided_denoiser(net, cond, null, 1.0)(x, t)[0, 0, 0, 0]) == pytest.approx(5.0)
    # s = 3: uncond + 3 (cond - uncond) = 1 + 3 * 4
    assert float(guided_denoiser(net, cond, null, 3.0)(x, t)[0, 0, 0, 0]) == pytest.approx(13.0)


def test_extra_inputs_are_shared_by_both_halves_of_a_guided_call():
    seen = {}

    def net(x, t, cond, *, lowres):
        seen["shapes"] = (x.shape, cond.shape, lowres.shape)
        seen["lowres"] = np.asarray(lowres)
        return x + lowres

    x, t = jnp.zeros((4, 2, 2, 1)), jnp.zeros((4,), jnp.int32)
    lowres = jnp.arange(2.0).reshape(2, 1, 1, 1) * jnp.ones((2, 2, 2, 1))
    cond = jnp.ones((2, 3), jnp.int32)
    out = guided_denoiser(net, cond, jnp.zeros_like(cond), 2.0, {"lowres": lowres})(x, t)
    assert seen["shapes"] == ((8, 2, 2, 1), (8, 3), (8, 2, 2, 1))
    # the same low-res image in the conditional and the unconditional half of each example
    np.testing.assert_array_equal(seen["lowres"][:4], seen["lowres"][4:])
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0.0, 1.0, 0.0, 1.0])


def test_sample_runs_the_named_sampler_and_refuses_unknown_ones():
    sched = make_schedule("linear", 20, beta_start=1e-3, beta_end=0.2)
    d = ml_collections.ConfigDict(
        dict(sampler="ddim", sample_steps=5, ddim_eta=0.0, prediction="x0",
             variance="fixed_small", clip_denoised=True, dynamic_threshold=0.0)
    )  # fmt: skip
    target = jnp.full((2, 3), 0.25)
    denoise = lambda x, t: jnp.broadcast_to(target, x.shape)  # noqa: E731  (predicts x0)
    for name in ("ddim", "dpm_solver_pp", "ancestral"):
        d.sampler = name
        got = sample(d, denoise, sched, jax.random.key(0), (2, 3))
        np.testing.assert_allclose(got, target, atol=1e-5)
    d.sampler = "euler"
    with pytest.raises(ValueError, match="diffusion.sampler='euler'"):
        sample(d, denoise, sched, jax.random.key(0), (2, 3))


def ancestral(steps, prediction):
    """``config.diffusion`` of the ancestral sampler with ``steps``, no clipping."""
    return ml_collections.ConfigDict(
        dict(sampler="ancestral", sample_steps=steps, prediction=prediction,
             variance="fixed_small", clip_denoised=False, dynamic_threshold=0.0)
    )  # fmt: skip


def record_first_t(seen, t):
    """Appends ``t[0]`` to ``seen`` each time the traced code runs (in step order)."""
    jax.debug.callback(lambda t: seen.append(int(t[0])), t, ordered=True)


def test_respaced_ancestral_sampling_is_the_exact_chain_of_its_timesteps():
    """sample_steps S < T: Algorithm 4.2 on the respaced schedule of DDIM's S timesteps, the
    network called with the original t (a wrong t would give other moments)."""
    sched, d, seen = make_schedule("cosine", 100), ancestral(10, "v"), []

    def denoise(x, t):
        record_first_t(seen, t)
        return gaussian_denoiser(sched, "v")(x, t)

    x = sample(d, denoise, sched, jax.random.key(0), (N, 1))
    ts = ddim_timesteps(100, 10)
    assert seen == list(ts[::-1])  # T-1 first, 0 last
    sub = respace(sched, ts)
    np.testing.assert_allclose(sub.alphas_cumprod, sched.alphas_cumprod[ts], rtol=1e-5)
    check_moments(x, *chain_moments(sub.betas, 10))


def test_respaced_ancestral_gives_clip_guidance_the_original_timesteps():
    sched, d, seen = make_schedule("cosine", 50), ancestral(5, "eps"), []

    def shift(mean, variance, x, t):
        record_first_t(seen, t)
        return mean

    sample(d, gaussian_denoiser(sched), sched, jax.random.key(0), (2, 1), shift)
    assert seen == list(ddim_timesteps(50, 5)[::-1])
    for steps in (1, 51):
        d.sample_steps = steps
        with pytest.raises(ValueError, match=rf"sample_steps={steps} must lie in \[2, T=50\]"):
            sample(d, gaussian_denoiser(sched), sched, jax.random.key(0), (2, 1), shift)
