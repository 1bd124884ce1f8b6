"""The GAN objective through the engine: k discriminator updates per generator update,
lazy regularisers, running means written back, and every GAN config's tiny variant."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import gan_ring, stylegan2_digits
from zoo import registry
from zoo.engine.state import init_state, split_modules
from zoo.engine.step import build_train_step
from zoo.main import run


def one_step(config, active=None, steps=1):
    """Run ``steps`` engine steps of ``config``'s objective on random data; the final state."""
    objective = registry.build_objective(config)
    graphs, params, rest = split_modules(objective.modules)
    state = init_state(objective, params, rest)
    step = jax.jit(build_train_step(objective, graphs, seed=0), static_argnums=2)
    s, b = objective.substeps, int(config.data.batch_size)
    rng = np.random.default_rng(0)
    if config.data.name == "ring":
        batch = {"point": rng.normal(size=(s, 1, b, 2)).astype(np.float32)}
    else:
        size, ch = config.data.image_size, config.data.channels
        batch = {"image": rng.uniform(-1, 1, (s, 1, b, size, size, ch)).astype(np.float32)}
    batch["example_id"] = np.arange(s * b, dtype=np.int32).reshape(s, 1, b)
    for i in range(steps):
        pattern = active or tuple(i % p.every == 0 for p in objective.players)
        state, metrics = step(state, batch, pattern)
    return objective, state, metrics


def adam_count(opt_state) -> int:
    counts = [x for x in jax.tree.leaves(opt_state) if jnp.ndim(x) == 0 and x.dtype == jnp.int32]
    return int(counts[0])


@pytest.mark.parametrize("k", [1, 3])
def test_k_discriminator_updates_per_generator_update(k):
    c = gan_ring.get_config("tiny")
    c.gan.d_steps = k
    objective, state, _ = one_step(c, steps=2)
    assert objective.substeps == k
    assert adam_count(state.opt["discriminator"]) == 2 * k
    assert adam_count(state.opt["generator"]) == 2


def test_lazy_regularisers_and_running_means():
    c = stylegan2_digits.get_config("tiny")
    c.gan.update(dict(r1_every=4, pl_every=4))
    objective, state, metrics = one_step(c, steps=1)
    names = [p.name for p in objective.players]
    assert names == ["discriminator", "r1", "generator", "path_length"]
    assert [p.every for p in objective.players] == [1, 4, 1, 4]
    assert "r1/r1" in metrics and "path_length/path_length" in metrics
    # R1 and the path-length player updated their roles: two Adam steps per role at step 0.
    assert adam_count(state.opt["discriminator"]) == 2
    assert adam_count(state.opt["generator"]) == 2
    # w_avg moved toward the batch mean of w, and pl_mean toward the path lengths.
    rest = state.rest["generator"]
    assert float(jnp.abs(rest["w_avg"]).sum()) > 0
    assert float(rest["pl_mean"]) > 0


def test_lazy_regularisation_rescales_adam():
    c = stylegan2_digits.get_config("tiny")
    c.gan.update(dict(r1_every=16, pl_every=4))
    objective = registry.build_objective(c)
    assert len(objective.players) == 4  # the rescaling is checked through _lazy below
    from zoo.gan.objective import _lazy

    lazy = _lazy(c.optim, 16)
    assert lazy.lr == pytest.approx(c.optim.lr * 16 / 17)
    assert lazy.b2 == pytest.approx(c.optim.b2 ** (16 / 17))


def test_bad_gan_configs_fail_before_compiling():
    c = gan_ring.get_config("tiny")
    c.gan.g_loss = "wasserstein"
    with pytest.raises(ValueError, match="gan.g_loss"):
        registry.build_objective(c)
    c = gan_ring.get_config("tiny")
    c.gan.pl_weight = 1.0
    with pytest.raises(ValueError, match="no mapping network"):
        registry.build_objective(c)


def _image_folder(path, n=8, size=12):
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(path / f"{i}.png")
    return str(path)


# The paper-scale configs' tiny variants exercise the same code as the bundled-data ones, with
# tfds mock data or a written image folder; they run with the slow checks (pytest -m slow).
_SLOW = pytest.mark.slow
GAN_CONFIGS = ["gan_ring", "dcgan_digits", pytest.param("dcgan_lsun", marks=_SLOW),
               "stylegan2_digits", pytest.param("stylegan2_ffhq", marks=_SLOW),
               pytest.param("styleswin_ffhq", marks=_SLOW), "gigagan_shapes"]  # fmt: skip


@pytest.mark.parametrize("name", GAN_CONFIGS)
def test_tiny_config_trains_one_step(name, tmp_path):
    c = importlib.import_module(f"configs.{name}").get_config("tiny")
    c.train.update(dict(steps=1, log_every=1, sample_every=0, eval_every=0, checkpoint_every=1))
    c.eval.num_samples = 0
    if c.data.name == "image_folder":
        c.data.path = _image_folder(tmp_path / "images")
    if "/" in c.data.name:  # a tfds dataset: its mock data
        with tfds.testing.mock_data(num_examples=8):
            state = run(c, str(tmp_path / "run"))
    else:
        state = run(c, str(tmp_path / "run"))
    assert int(state.step) == 1
    for role in ("generator", "discriminator"):
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params[role]))
