"""Imagen's cascade: the SR stage's noise-augmented input, and sampling through both stages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import glide_shapes, imagen_sr_shapes
from tests.diffusion.helpers import perturb_params
from zoo import registry
from zoo.diffusion.cascade import degrade, upsample
from zoo.diffusion.ddpm import q_sample
from zoo.diffusion.objective import schedule_from_config
from zoo.engine.objective import Context
from zoo.engine.rng import example_keys
from zoo.main import run


def test_degrade_keeps_the_size_and_removes_detail():
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    low = degrade(x, 4)
    assert low.shape == x.shape
    assert float(jnp.std(low)) < 0.5 * float(jnp.std(x))  # white noise averaged over 4x4
    flat = jnp.full((1, 8, 8, 3), 0.3)
    np.testing.assert_allclose(degrade(flat, 4), flat, atol=1e-6)
    np.testing.assert_allclose(upsample(jnp.full((1, 2, 2, 1), -0.5), 8), -0.5, atol=1e-6)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("glide")
    config = glide_shapes.get_config("tiny")
    config.train.update(dict(steps=1, log_every=1, sample_every=0, eval_every=0))
    config.eval.num_samples = 0
    run(config, str(workdir))
    return str(workdir)


def sr_config(base_run):
    config = imagen_sr_shapes.get_config("tiny")
    config.stages.base.workdir = base_run
    return config


class Spy(nnx.Module):
    """Stands in for the SR network: records its inputs, returns zeros."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond, *, lowres, aug_t, dropout_key=None):
        self.calls.append(dict(x=x, lowres=lowres, aug_t=aug_t))
        return jnp.zeros_like(x)


def test_sr_stage_sees_the_noise_augmented_low_res_image(base_run):
    config = sr_config(base_run)
    objective = registry.build_objective(config)
    n = 64
    x0 = jax.random.uniform(jax.random.key(0), (n, 32, 32, 3), minval=-1, maxval=1)
    tokens = jnp.ones((n, 7), jnp.int32)
    ctx = Context(jax.random.key(1), jnp.int32(0), jnp.int32(0), jnp.arange(n, dtype=jnp.int32))
    spy = Spy()
    objective.players[0].loss(lambda role, **kw: spy, {"image": x0, "tokens": tokens}, ctx)
    (seen,) = spy.calls
    aug_t = np.asarray(seen["aug_t"])
    assert aug_t.min() >= 0 and aug_t.max() <= config.cascade.max_aug_t and len(set(aug_t)) > 5
    # recompute the augmentation from the same per-example keys
    keys = example_keys(ctx, "augment")
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.split(k)[1], (32, 32, 3)))(keys)
    sched = schedule_from_config(config.diffusion)
    expected = q_sample(sched, degrade(x0, 16), seen["aug_t"], noise)
    np.testing.assert_allclose(seen["lowres"], expected, atol=1e-5)
    assert float(jnp.max(jnp.abs(seen["lowres"] - degrade(x0, 16)))) > 0.1  # it is noised


@pytest.mark.slow  # builds, trains and samples two tiny stages (about a minute on 2 cores)
def test_cascade_samples_use_each_stages_own_parameters(base_run, tmp_path):
    config = sr_config(base_run)
    config.train.update(dict(steps=1, log_every=1, sample_every=0, eval_every=0))
    config.eval.num_samples = 0
    assert int(run(config, str(tmp_path / "sr")).step) == 1
    objective = registry.build_objective(config)
    modules = {"model": objective.modules["model"], "base": objective.frozen["base"]}
    for module in modules.values():
        perturb_params(module, 0.05, seed=3)

    def models(role, train=True, keep_state=True):
        return nnx.view(modules[role], deterministic=True, raise_if_not_found=False)

    def draw():
        return np.asarray(objective.sample(models, jax.random.key(0), 2)["image"])

    first = draw()
    assert first.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(draw(), first)  # same key, same parameters: same samples
    for role in ("base", "model"):  # each stage's parameters change the cascade's output
        params = nnx.state(modules[role], nnx.Param)
        nnx.update(modules[role], jax.tree.map(lambda p: p * 1.5, params))
        changed = draw()
        assert np.abs(changed - first).max() > 1e-3, role
        first = changed


def test_cascade_config_errors(base_run):
    config = sr_config(base_run)
    config.cascade.low_res = 32
    with pytest.raises(ValueError, match="cascade.low_res=32"):
        registry.build_objective(config)
    config = sr_config(base_run)
    config.cascade.max_aug_t = 50
    with pytest.raises(ValueError, match="cascade.max_aug_t=50"):
        registry.build_objective(config)
    config = sr_config(base_run)
    config.cascade.low_res = 8
    with pytest.raises(ValueError, match="set --config.cascade.low_res=16"):
        registry.build_objective(config)
