"""The GAN objective through the engine: k discriminator updates per generator update,
lazy regularisers, running means written back, and every GAN config's tiny variant."""

import functools
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx
from PIL import Image

from configs import gan_ring, stylegan2_digits
from zoo import registry
from zoo.engine.objective import Context
from zoo.engine.optim import make_optimizer
from zoo.engine.state import init_state, split_modules
from zoo.engine.step import Models, build_train_step
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
    """Each regularised role's Adam has lr * c and beta ** c, c = N / (N + 1) (StyleGAN2 sec.
    B), checked on the objective's own optimizers against Adam built with those numbers."""
    c = stylegan2_digits.get_config("tiny")
    c.gan.update(dict(r1_every=16, pl_every=4))
    c.optim.update(dict(b1=0.5, b2=0.99))  # b1 = 0 would hide a missing b1 ** c
    objective = registry.build_objective(c)
    params = {"w": jnp.zeros((3,))}
    grads = [{"w": jnp.array([1.0, -2.0, 0.5]) * (i + 1) ** 0.5} for i in range(3)]

    def updates(tx):
        opt, out = tx.init(params), []
        for g in grads:
            u, opt = tx.update(g, opt, params)
            out.append(u["w"])
        return np.stack(out)

    steps = int(c.train.steps)
    for role, every in (("discriminator", 16), ("generator", 4)):
        k = every / (every + 1)
        expected = ml_collections.ConfigDict(c.optim.to_dict())
        expected.update(dict(lr=c.optim.lr * k, b1=c.optim.b1**k, b2=c.optim.b2**k))
        want = updates(make_optimizer(expected, steps))
        np.testing.assert_allclose(updates(objective.optimizers[role]), want, rtol=1e-6)
        assert not np.allclose(want, updates(make_optimizer(c.optim, steps)), rtol=1e-3)
    # No regulariser on a role: its optimizer is the configured one.
    c.gan.update(dict(r1_gamma=0.0, pl_weight=0.0))
    plain = registry.build_objective(c).optimizers
    for role in ("discriminator", "generator"):
        np.testing.assert_allclose(
            updates(plain[role]), updates(make_optimizer(c.optim, steps)), rtol=1e-6
        )


# -- players called directly: loss values and per-example draws ----------------------------


def player_runner(objective, graphs, name):
    """``run(params, rest, batch, ids) -> (loss, aux, new rest)`` of one player, jitted."""
    player = next(p for p in objective.players if p.name == name)

    @jax.jit
    def run(params, rest, batch, ids):
        models = Models(graphs, params, rest)
        ctx = Context(jax.random.key(11), jnp.int32(0), jnp.int32(0), ids)
        loss, aux = player.loss(models, batch, ctx)
        return loss, aux, models.updated_rest()

    return run


def with_noise(params, strength):
    """``params`` with every generator noise strength set to ``strength`` (they start at 0)."""

    def set_noise(path, x):
        name = str(getattr(path[-1], "key", path[-1]))
        return jnp.full_like(x, strength) if name in ("noise_strength", "strength") else x

    return {**params, "generator": jax.tree_util.tree_map_with_path(set_noise, params["generator"])}


@pytest.fixture(scope="module")
def stylegan2():
    """Tiny StyleGAN2 with per-example D (minibatch-stddev groups of 1), noise inputs on,
    R1 every 4 and path length every 4 on half the batch."""
    c = stylegan2_digits.get_config("tiny")
    c.net.mbstd_group = 1  # groups couple examples; with 1 D is per example
    c.gan.update(dict(r1_every=4, r1_gamma=0.1, pl_every=4, pl_weight=2.0, pl_batch_shrink=2))
    objective = registry.build_objective(c)
    graphs, params, rest = split_modules(objective.modules)
    rest = jax.tree.map(lambda x: x + 0.1, rest)  # nonzero w_avg and pl_mean
    images = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    return c, objective, graphs, with_noise(params, 0.5), rest, {"image": images}


def test_r1_loss_is_gamma_over_2_times_interval_times_penalty(stylegan2):
    c, objective, graphs, params, rest, batch = stylegan2
    ids = jnp.arange(4, dtype=jnp.int32)
    loss, aux, _ = player_runner(objective, graphs, "r1")(params, rest, batch, ids)

    @jax.jit
    def penalty(params, rest, x):  # E ||grad_x D(x)||^2, computed here from D itself
        disc = nnx.merge(graphs.train["discriminator"], params, rest)
        grad = jax.grad(lambda x: jnp.sum(disc(x)))(x)
        return jnp.mean(jnp.sum(jnp.square(grad), axis=(1, 2, 3)))

    expected = penalty(params["discriminator"], rest["discriminator"], batch["image"])
    assert float(expected) > 0
    np.testing.assert_allclose(aux["r1"], expected, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * 0.1 * 4 * expected, rtol=1e-5)


def test_path_length_loss_is_weight_times_interval_times_penalty(stylegan2):
    c, objective, graphs, params, rest, batch = stylegan2
    ids = jnp.arange(4, dtype=jnp.int32)
    loss, aux, _ = player_runner(objective, graphs, "path_length")(params, rest, batch, ids)
    assert float(aux["pl_penalty"]) > 0
    np.testing.assert_allclose(loss, 2.0 * 4 * aux["pl_penalty"], rtol=1e-6)


@pytest.mark.parametrize(
    "player,pieces",
    [("discriminator", 2), ("generator", 2), ("path_length", 2), ("path_length", 4)],
)
def test_players_give_the_same_numbers_however_the_batch_is_split(stylegan2, player, pieces):
    """A batch of 4 at once and in pieces (as devices or microbatches see it): the same mean
    loss and metrics, and running means (w_avg, pl_mean) whose mean over the pieces is the
    whole batch's (the engine averages them over devices). Every random input (z, style
    mixing, noise, the path-length probe) is drawn per example; 4 pieces of 1 example run
    the path length on the examples with even ids, weighted."""
    c, objective, graphs, params, rest, batch = stylegan2
    run = player_runner(objective, graphs, player)
    ids = np.arange(4, dtype=np.int32)
    whole = run(params, rest, batch, jnp.asarray(ids))
    parts = [
        run(params, rest, {k: v[piece] for k, v in batch.items()}, jnp.asarray(piece))
        for piece in np.split(ids, pieces)
    ]
    mean = jax.tree.map(lambda *xs: sum(xs) / pieces, *parts)
    np.testing.assert_allclose(whole[0], mean[0], rtol=1e-5)
    for name in whole[1]:
        np.testing.assert_allclose(whole[1][name], mean[1][name], rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(whole[2]), jax.tree.leaves(mean[2]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gigagan_players_give_the_same_numbers_however_the_batch_is_split():
    """GigaGAN's D loss (text-conditioned, matching-aware): the generator's noise inputs and
    the mismatched captions are drawn per example, so two batches of 2 give the batch of 4's
    numbers (the generator player's draws are the StyleGAN2 test's)."""
    from zoo.gan.objective import ShapesConditions

    c = importlib.import_module("configs.gigagan_shapes").get_config("tiny")
    objective = registry.build_objective(c)
    graphs, params, rest = split_modules(objective.modules)
    params = with_noise(params, 0.5)
    labels = np.array([3, 3, 50, 120], np.int32)  # two examples share a caption
    batch = {
        "image": np.random.default_rng(2).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32),
        "label": labels,
        "tokens": np.asarray(ShapesConditions().tokens)[labels],
    }
    ids = np.arange(4, dtype=np.int32)
    run = player_runner(objective, graphs, "discriminator")
    whole = run(params, rest, batch, jnp.asarray(ids))
    parts = [
        run(params, rest, {k: v[piece] for k, v in batch.items()}, jnp.asarray(piece))
        for piece in np.split(ids, 2)
    ]
    mean = jax.tree.map(lambda *xs: sum(xs) / 2, *parts)
    assert "mismatch_score" in whole[1]
    for key in whole[1]:
        np.testing.assert_allclose(whole[1][key], mean[1][key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(whole[0], mean[0], rtol=1e-5)


def test_samples_and_figures_use_the_noise_inputs(stylegan2):
    """Samples (the FD eval's too) and figures come from the trained distribution: with the
    noise inputs on (StyleGAN2's FID code: noise_mode='random'), one key per sample."""
    c, objective, graphs, params, rest, _ = stylegan2
    key = jax.random.key(5)

    @jax.jit
    def pictures(params, rest):
        models = Models(graphs, params, rest)
        out = {"samples": objective.sample(models, key, 4)["image"]}
        out.update({name: fn(models, key) for name, fn in objective.figures.items()})
        return out

    @functools.partial(jax.jit, static_argnums=2)
    def sample_with(params, rest, noise):
        gen = Models(graphs, params, rest)("generator", train=False)
        k_z, _, k_noise = jax.random.split(key, 3)
        z = jax.random.normal(k_z, (4, int(c.net.z_dim)))
        keys = jax.random.split(k_noise, 4) if noise else None
        return jnp.clip(gen(z, noise_key=keys, truncation=c.gan.sample_truncation), -1, 1)

    noisy, quiet = pictures(params, rest), pictures(with_noise(params, 0.0), rest)
    assert sorted(noisy) == ["interpolation", "samples", "style_mixing", "truncation"]
    for name in noisy:  # the noise strengths act on every picture
        assert float(jnp.max(jnp.abs(noisy[name] - quiet[name]))) > 1e-3, name
    np.testing.assert_allclose(noisy["samples"], sample_with(params, rest, True), atol=1e-6)
    assert float(jnp.max(jnp.abs(noisy["samples"] - sample_with(params, rest, False)))) > 1e-3


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
