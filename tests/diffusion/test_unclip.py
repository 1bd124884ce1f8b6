"""unCLIP (DALL-E 2): the diffusion prior over CLIP image embeddings and the decoder.

The CLIP and prior stages are written as checkpoints of freshly initialised modules (no
training, nothing compiled), as experiments/bench/autoregressive_step.py:write_stage_one does.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import clip_shapes, unclip_decoder_shapes, unclip_prior_shapes
from tests.diffusion.helpers import perturb_params
from tests.diffusion.test_latent import one_step
from zoo import registry
from zoo.data import shapes
from zoo.diffusion.clip import clip_from_config
from zoo.diffusion.unclip_decoder import decoder_from_config
from zoo.diffusion.unclip_prior import UnclipPrior, prior_from_config
from zoo.engine.checkpoint import Checkpointer
from zoo.engine.objective import Context
from zoo.engine.stage_store import StageStore
from zoo.engine.state import split_modules
from zoo.main import run


def write_run(config, module, workdir: str) -> str:
    """A one-checkpoint run of ``config`` whose role "model" holds ``module``'s weights."""
    _, params, rest = split_modules({"model": module})
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(1, {"params": params, "rest": rest}, config.to_dict(), {"step": 1})
    checkpointer.close()
    return workdir


def tiny_clip(seed=0):
    """A freshly initialised clip_shapes:tiny CLIP."""
    return clip_from_config(
        clip_shapes.get_config("tiny"),
        vocab_size=shapes.SHAPES_TOKENIZER.vocab_size,
        max_len=shapes.SHAPES_MAX_LEN,
        rngs=nnx.Rngs(seed),
    )


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("clip"))
    return write_run(clip_shapes.get_config("tiny"), tiny_clip(), workdir)


def prior_config(clip_run):
    config = unclip_prior_shapes.get_config("tiny")
    config.stages.clip.workdir = clip_run
    return config


@pytest.fixture(scope="module")
def prior_run(clip_run, tmp_path_factory):
    config = prior_config(clip_run)
    prior = prior_from_config(config, clip_shapes.get_config("tiny"), rngs=nnx.Rngs(1))
    perturb_params(prior, 0.05, seed=2)
    workdir = write_run(config, prior, str(tmp_path_factory.mktemp("prior")))
    # what a trained prior run records of the CLIP it loaded (checked by the decoder)
    record = {"workdir": os.path.abspath(clip_run), "role": "model", "ema": True}
    StageStore(workdir).write_record("stages", "clip", record)
    return workdir


def decoder_config(clip_run, prior_run):
    config = unclip_decoder_shapes.get_config("tiny")
    config.stages.clip.workdir = clip_run
    config.stages.prior.workdir = prior_run
    return config


def eval_models(objective):
    modules = {**objective.modules, **objective.frozen}
    return lambda role, train=True, keep_state=True: nnx.view(
        modules[role], deterministic=True, raise_if_not_found=False
    )


def context(n):
    ids = jnp.arange(n, dtype=jnp.int32)
    return Context(jax.random.key(1), jnp.int32(0), jnp.int32(0), ids)


def loss_with_zero_model(objective, condition_of, n=1000):
    """``objective``'s loss on a batch of ``n`` shapes examples with role "model" a network
    that outputs zeros: (loss, aux, ``condition_of(*args, **kwargs)`` of its one call)."""
    seen = []

    def zero_model(x, *args, **kwargs):
        seen.append(condition_of(x, *args, **kwargs))
        return jnp.zeros_like(x)

    def models(role, train=True, keep_state=True):
        return zero_model if role == "model" else eval_models(objective)(role)

    value, aux = objective.players[0].loss(models, shapes_batch(n), context(n))
    (condition,) = seen
    return value, aux, condition


def shapes_batch(n, seed=0):
    labels = jax.random.randint(jax.random.key(seed), (n,), 0, shapes.NUM_CLASSES)
    images = jax.random.uniform(jax.random.key(seed + 1), (n, 16, 16, 3), minval=-1, maxval=1)
    tokens = jnp.asarray(shapes.caption_table()[0])[labels]
    return {"image": images, "tokens": tokens, "label": labels}


# -- the prior ----------------------------------------------------------------


def test_prior_output_has_the_embedding_shape_and_a_dropped_caption_is_no_input():
    E, L, text_dim = 12, shapes.SHAPES_MAX_LEN, 8
    prior = UnclipPrior(
        embed_dim=E, text_dim=text_dim, max_len=L, dim=16, depth=2, num_heads=2,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    keys = jax.random.split(jax.random.key(0), 4)
    x, text = jax.random.normal(keys[0], (3, E)), jax.random.normal(keys[1], (3, E))
    tokens = jax.random.normal(keys[2], (3, L, text_dim))
    mask = jnp.arange(L)[None] < jnp.array([[3], [5], [7]])
    t = jnp.array([0, 5, 19])

    def out(keep, tokens=tokens, text=text):
        return prior(x, t, keep, tokens=tokens, token_mask=mask, text_emb=text)

    kept, dropped = jnp.ones((3,)), jnp.zeros((3,))
    assert out(kept).shape == (3, E) and out(kept).dtype == jnp.float32
    assert np.isfinite(np.asarray(out(kept))).all()
    other = dict(tokens=tokens + 1.0, text=-text)
    assert float(jnp.max(jnp.abs(out(kept, **other) - out(kept)))) > 1e-3
    np.testing.assert_allclose(out(dropped, **other), out(dropped), atol=1e-6)
    # padding tokens are masked out of attention: their features change nothing
    padded = jnp.where(mask[..., None], tokens, 7.0)
    np.testing.assert_allclose(out(kept, tokens=padded), out(kept), atol=1e-5)


def test_prior_loss_targets_the_scaled_clip_embedding_and_drops_10_percent(clip_run):
    config = prior_config(clip_run)
    assert config.diffusion.condition_dropout == 0.1  # DALL-E 2's rate
    objective = registry.build_objective(config)
    value, aux, keep = loss_with_zero_model(objective, lambda x, t, keep, **inputs: keep)
    # x0 target sqrt(E) e with |e| = 1: a zero output's mean squared error is exactly 1
    np.testing.assert_allclose(float(value), 1.0, rtol=1e-5)
    assert set(np.unique(np.asarray(keep))) == {0.0, 1.0}
    assert abs(float(jnp.mean(keep)) - 0.9) < 0.03
    np.testing.assert_allclose(float(aux["kept"]), float(jnp.mean(keep)))


def test_prior_trains_a_step_and_stays_finite(clip_run, tmp_path):
    state = run(one_step(prior_config(clip_run)), str(tmp_path))
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [json.loads(line)["model/loss"] for line in f if "model/loss" in line]
    assert losses and all(np.isfinite(losses))


def test_prior_samples_embeddings_and_evaluates(clip_run):
    objective = registry.build_objective(prior_config(clip_run))
    models = eval_models(objective)
    perturb_params(objective.modules["model"], 0.05)
    out = objective.sample(models, jax.random.key(0), 3)
    assert out["embedding"].shape == (3, 16) and out["label"].shape == (3,)
    np.testing.assert_allclose(jnp.linalg.norm(out["embedding"], axis=-1), 1.0, rtol=1e-5)
    metrics = objective.evaluate(models, shapes_batch(4), jax.random.key(1))
    assert set(metrics) == {"cosine", "cosine_text", "retrieval", "retrieval_true"}
    assert all(-1.0 <= float(v) <= 1.0 for v in metrics.values())


# -- the decoder --------------------------------------------------------------


def test_decoder_output_depends_on_the_embedding_through_both_paths():
    config = unclip_decoder_shapes.get_config("tiny")
    # 64 channels: with <= 32, every GroupNorm group holds one channel, which cancels the
    # per-channel timestep (and extra_emb) bias of each residual block exactly.
    config.unet.update(dict(ch_mult=(4,), attn_resolutions=(8,)))
    config.data.image_size = 8
    net = decoder_from_config(config, embed_dim=16, rngs=nnx.Rngs(0))
    perturb_params(net, 0.05)  # zero-initialised output layers would hide the condition
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    t = jnp.array([3, 40])
    emb = jax.random.normal(jax.random.key(1), (2, 16))
    decode = jax.jit(lambda emb: net(x, t, emb))
    out = decode(emb)
    assert out.shape == x.shape
    assert float(jnp.max(jnp.abs(decode(-emb) - out))) > 1e-3
    tokens, extra = net.to_tokens(emb).reshape(2, 4, 16), net.to_temb(emb)
    unet = jax.jit(lambda tokens, extra: net.unet(x, t, context=tokens, extra_emb=extra))
    np.testing.assert_allclose(unet(tokens, extra), out, atol=1e-5)  # what the wrapper feeds
    for changed in (unet(-tokens, extra), unet(tokens, -extra)):  # each path on its own
        assert float(jnp.max(jnp.abs(changed - out))) > 1e-3


def test_decoder_loss_zeroes_10_percent_of_the_embeddings(clip_run, prior_run):
    objective = registry.build_objective(decoder_config(clip_run, prior_run))
    _, aux, emb = loss_with_zero_model(objective, lambda x, t, emb, **kwargs: emb)
    norms = np.asarray(jnp.linalg.norm(emb, axis=-1))
    zeroed = norms == 0
    np.testing.assert_allclose(norms[~zeroed], 1.0, rtol=1e-5)  # the others: CLIP's, unit
    assert abs(zeroed.mean() - 0.1) < 0.03
    np.testing.assert_allclose(float(aux["kept"]), 1 - zeroed.mean())


@pytest.mark.slow  # the prior sampler and the U-Net sampler, twice each (~30 s on 2 cores)
def test_decoder_samples_go_through_the_prior_stages_parameters(clip_run, prior_run):
    objective = registry.build_objective(decoder_config(clip_run, prior_run))
    models = eval_models(objective)
    perturb_params(objective.modules["model"], 0.05)
    sample = jax.jit(lambda key: objective.sample(models, key, 2))
    first = sample(jax.random.key(0))
    assert first["image"].shape == (2, 16, 16, 3)
    assert set(first) == {"image", "label", "shape", "color", "position"}
    np.testing.assert_allclose(sample(jax.random.key(0))["image"], first["image"])
    prior = objective.frozen["prior"]
    nnx.update(prior, jax.tree.map(lambda p: 1.5 * p, nnx.state(prior, nnx.Param)))
    sample = jax.jit(lambda key: objective.sample(models, key, 2))  # retrace: new weights
    changed = sample(jax.random.key(0))
    np.testing.assert_array_equal(changed["label"], first["label"])  # the same captions
    assert float(jnp.max(jnp.abs(changed["image"] - first["image"]))) > 1e-3


@pytest.mark.slow  # a U-Net train step compiles in ~30 s on 2 cores
def test_decoder_trains_a_step_through_the_engine(clip_run, prior_run, tmp_path):
    state = run(one_step(decoder_config(clip_run, prior_run)), str(tmp_path))
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))
    records = StageStore(str(tmp_path)).records()["stages"]
    assert records["prior"]["model"] == "unclip_prior" and records["clip"]["model"] == "clip"


# -- errors -------------------------------------------------------------------


def test_missing_or_wrong_stage_runs_fail_before_anything_compiles(clip_run, prior_run, tmp_path):
    config = unclip_prior_shapes.get_config("tiny")
    with pytest.raises(ValueError, match="config.stages.clip"):
        registry.build_objective(config)
    config.stages.clip.workdir = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no such directory"):
        registry.build_objective(config)
    config.stages.clip.workdir = prior_run
    with pytest.raises(ValueError, match="names a 'unclip_prior' run; unCLIP needs a 'clip'"):
        registry.build_objective(config)

    config = decoder_config(clip_run, prior_run)
    config.stages.prior.workdir = ""
    with pytest.raises(ValueError, match="config.stages.prior"):
        registry.build_objective(config)
    config.stages.prior.workdir = clip_run
    with pytest.raises(ValueError, match="names a 'clip' run; the decoder samples through"):
        registry.build_objective(config)
    config = decoder_config(clip_run, prior_run)
    config.stages.clip.workdir = str(tmp_path / "other_clip")
    write_run(clip_shapes.get_config("tiny"), tiny_clip(5), config.stages.clip.workdir)
    with pytest.raises(ValueError, match="the decoder must read the prior's embedding space"):
        registry.build_objective(config)
    config = prior_config(clip_run)
    config.diffusion.clip_denoised = True
    with pytest.raises(ValueError, match="clip_denoised=False"):
        registry.build_objective(config)
