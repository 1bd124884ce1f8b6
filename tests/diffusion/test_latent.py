"""Latent diffusion: the measured scale factor, and ldm_shapes:tiny on a klvae run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import autoencoder_shapes, dvae_shapes, ldm_shapes
from zoo import registry
from zoo.diffusion.latent import LatentDenoiser
from zoo.engine.objective import Context
from zoo.main import run


def ctx_of(n):
    ids = jnp.arange(n, dtype=jnp.int32)
    return Context(jax.random.key(0), jnp.int32(0), jnp.int32(0), ids)


def test_measured_scale_gives_unit_variance_on_its_batch_and_is_kept():
    model = LatentDenoiser(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    z = 3.7 * jax.random.normal(jax.random.key(1), (8, 4, 4, 4)) + 0.5
    scale = model.measure(z, ctx_of(8))
    np.testing.assert_allclose(np.std(np.asarray(z * scale, np.float64)), 1.0, rtol=1e-4)
    # measured once: a later batch on another scale does not move it
    again = model.measure(10 * z, ctx_of(8))
    np.testing.assert_allclose(again, scale, rtol=0)
    fixed = LatentDenoiser(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), scale_factor=0.18215)
    np.testing.assert_allclose(fixed.measure(z, ctx_of(8)), 0.18215, rtol=1e-7)
    with pytest.raises(ValueError, match="scale_factor must be >= 0"):
        LatentDenoiser(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), scale_factor=-1.0)


def one_step(config):
    config.train.update(dict(steps=1, log_every=1, sample_every=0, eval_every=0))
    config.eval.num_samples = 0
    return config


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("klvae")
    run(one_step(autoencoder_shapes.get_config("tiny")), str(workdir))
    return str(workdir)


@pytest.mark.slow  # two whole tiny runs and a sample (about a minute on 2 cores)
def test_ldm_trains_on_the_latents_and_decodes_captioned_samples(autoencoder_run, tmp_path):
    config = ldm_shapes.get_config("tiny")
    config.stages.autoencoder.workdir = autoencoder_run
    state = run(one_step(config), str(tmp_path / "ldm"))
    assert int(state.step) == 1
    # the scale was measured on the first batch and is kept in the model's state
    scale = float(state.rest["model"]["scale"][...])
    assert np.isfinite(scale) and scale > 0
    objective = registry.build_objective(config)
    assert objective.modules["model"].net.unet.conv_in.in_features == 4  # 8x8x4 latents
    models = lambda role, train=True, keep_state=True: nnx.view(  # noqa: E731
        objective.modules[role] if role == "model" else objective.frozen[role],
        deterministic=True,
        raise_if_not_found=False,
    )
    samples = objective.sample(models, jax.random.key(0), 3)
    assert samples["image"].shape == (3, 16, 16, 3) and set(samples) >= {"shape", "color"}


@pytest.mark.slow  # a klvae and a dvae run
def test_ldm_stage_errors_name_what_to_fix(autoencoder_run, tmp_path):
    config = ldm_shapes.get_config("tiny")
    config.stages.autoencoder.workdir = autoencoder_run
    config.diffusion.clip_denoised = True
    with pytest.raises(ValueError, match="clip_denoised=False"):
        registry.build_objective(config)
    config = ldm_shapes.get_config("tiny")
    config.stages.autoencoder.workdir = autoencoder_run
    config.data.image_size = 32
    with pytest.raises(ValueError, match="data.image_size=32 but the autoencoder"):
        registry.build_objective(config)
    dvae = tmp_path / "dvae"
    run(one_step(dvae_shapes.get_config("tiny")), str(dvae))
    config = ldm_shapes.get_config("tiny")
    config.stages.autoencoder.workdir = str(dvae)
    with pytest.raises(ValueError, match="needs a 'klvae' run"):
        registry.build_objective(config)
