"""CLIP on shapes: unit-norm embeddings, the multi-positive InfoNCE against a hand computation,
the noise-aware tower, CLIP guidance (GLIDE), clip_shapes:tiny through the engine, and
config errors before anything compiles."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import clip_shapes
from zoo import registry
from zoo.data import shapes
from zoo.diffusion import clip_guidance
from zoo.diffusion.clip import MAX_LOG_SCALE
from zoo.diffusion.clip_objective import contrastive_loss
from zoo.engine import loop
from zoo.main import run

TOKENS = jnp.asarray(shapes.caption_table()[0])  # [162, L]


def tiny_clip(variant="tiny"):
    return registry.build_objective(clip_shapes.get_config(variant)).modules["model"]


def test_embeddings_are_unit_norm_and_the_logit_scale_is_clipped_at_100():
    clip = tiny_clip()
    x = jax.random.uniform(jax.random.key(0), (5, 16, 16, 3), minval=-1, maxval=1)
    image, text, scale = clip(x, TOKENS[:3])
    assert image.shape == (5, 16) and text.shape == (3, 16)
    np.testing.assert_allclose(jnp.linalg.norm(image, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(text, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scale, 1 / 0.07, rtol=1e-5)  # CLIP's initial temperature
    clip.log_scale[...] = jnp.asarray(MAX_LOG_SCALE + 2.0)
    np.testing.assert_allclose(clip.logit_scale(), 100.0, rtol=1e-5)
    # past the clip the scale gets no gradient
    grad = nnx.grad(lambda m: m.logit_scale())(clip)
    assert float(grad.log_scale[...]) == 0.0


def reference_loss(image, text, scale, labels) -> float:
    """float64 loops: each row's (column's) target is uniform over the same-label pairs."""
    image, text = np.asarray(image, np.float64), np.asarray(text, np.float64)
    logits = scale * image @ text.T
    b = len(labels)

    def direction(rows):  # rows[i][j]: logit of query i against candidate j
        total = 0.0
        for i in range(b):
            log_norm = math.log(sum(math.exp(rows[i][j]) for j in range(b)))
            positives = [j for j in range(b) if labels[j] == labels[i]]
            total += -sum(rows[i][j] - log_norm for j in positives) / len(positives)
        return total / b

    return 0.5 * (direction(logits) + direction(logits.T))


def test_contrastive_loss_is_infonce_with_duplicate_captions_as_positives():
    keys = jax.random.split(jax.random.key(1), 2)
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    image = unit(jax.random.normal(keys[0], (4, 6)))
    text = unit(jax.random.normal(keys[1], (4, 6)))
    labels, scale = [5, 9, 5, 11], jnp.float32(3.0)  # examples 0 and 2 share a caption
    got = float(contrastive_loss(image, text, scale, jnp.array(labels)))
    np.testing.assert_allclose(got, reference_loss(image, text, 3.0, labels), rtol=1e-5)
    # One-hot targets (CLIP's, every other pair a negative) give another number here...
    onehot = float(contrastive_loss(image, text, scale, jnp.arange(4)))
    assert abs(onehot - got) > 1e-2
    logits = np.asarray(3.0 * image @ text.T, np.float64)
    ce = lambda z: -np.mean(np.diag(z) - np.log(np.exp(z).sum(1)))  # noqa: E731
    np.testing.assert_allclose(onehot, 0.5 * (ce(logits) + ce(logits.T)), rtol=1e-5)
    # ...but not when the copies embed identically (a text tower without dropout): the copy's
    # column ties with the true one, so it was never a negative, and both losses agree.
    same = text.at[2].set(text[0])
    tied = float(contrastive_loss(image, same, scale, jnp.array(labels)))
    np.testing.assert_allclose(tied, reference_loss(image, same, 3.0, labels), rtol=1e-5)
    np.testing.assert_allclose(tied, contrastive_loss(image, same, scale, jnp.arange(4)), rtol=1e-5)
    # Its floor is the targets' entropy: perfect embeddings leave log 2 on the duplicated rows.
    perfect = unit(jnp.eye(6)[jnp.array([0, 1, 0, 2])])
    floor = float(contrastive_loss(perfect, perfect, jnp.float32(100.0), jnp.array(labels)))
    np.testing.assert_allclose(floor, 0.5 * math.log(2), rtol=1e-4)


def test_noise_aware_image_tower_reads_t_and_the_plain_one_refuses_it():
    clip = tiny_clip("noisy_tiny")
    x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3), minval=-1, maxval=1)
    at = lambda t: clip.encode_image(x, jnp.full((2,), t, jnp.int32))  # noqa: E731
    assert float(jnp.max(jnp.abs(at(0) - at(40)))) > 1e-3
    np.testing.assert_allclose(at(7), at(7))  # deterministic: the difference is t's
    with pytest.raises(ValueError, match="needs the timestep t"):
        clip.encode_image(x)
    with pytest.raises(ValueError, match="not noise-aware"):
        tiny_clip().encode_image(x, jnp.zeros((2,), jnp.int32))


@pytest.fixture(scope="module")
def trained_noisy_clip(tmp_path_factory):
    """noisy_tiny trained for 150 steps through the engine: (config, CLIP with those weights)."""
    config = clip_shapes.get_config("noisy_tiny")
    config.data.update(dict(batch_size=32, num_train=512))
    config.train.update(dict(steps=150, log_every=50, eval_every=0, checkpoint_every=0))
    config.optim.warmup_steps = 10
    state = run(config, str(tmp_path_factory.mktemp("noisy_clip")))
    clip = registry.build_objective(config).modules["model"]
    params = nnx.state(clip, nnx.Param)
    nnx.replace_by_pure_dict(params, jax.device_get(state.params["model"]))
    nnx.update(clip, params)
    return config, clip


def test_clip_gradient_matches_finite_differences(trained_noisy_clip):
    _, clip = trained_noisy_clip
    x = jax.random.normal(jax.random.key(3), (3, 16, 16, 3))
    t, tokens = jnp.array([5, 20, 40]), TOKENS[jnp.array([0, 50, 100])]
    grad = clip_guidance.clip_similarity_grad(clip, x, t, tokens)
    assert grad.shape == x.shape
    v = jax.random.normal(jax.random.key(4), x.shape)
    h = 1e-2
    plus = clip_guidance.clip_similarity(clip, x + h * v, t, tokens)
    minus = clip_guidance.clip_similarity(clip, x - h * v, t, tokens)
    directional = jnp.sum((grad * v).reshape(3, -1), axis=1)
    np.testing.assert_allclose((plus - minus) / (2 * h), directional, rtol=2e-2, atol=1e-4)


def test_clip_guidance_raises_the_similarity_to_the_target_caption(trained_noisy_clip):
    _, clip = trained_noisy_clip
    n = 16
    examples = shapes.ShapesExamples(n, 16, 3, seed=0, train=False).load(np.arange(n))
    x0, labels = jnp.asarray(examples["image"]), jnp.asarray(examples["label"])
    t = jnp.full((n,), 10, jnp.int32)
    x_t = x0 * 0.9 + 0.3 * jax.random.normal(jax.random.key(5), x0.shape)  # noisy images
    target = TOKENS[(labels + 1) % shapes.NUM_CLASSES]  # another position, say
    other = TOKENS[(labels + 80) % shapes.NUM_CLASSES]
    grad = clip_guidance.clip_similarity_grad(clip, x_t, t, target)
    # one small step of the same length for every example
    moved = x_t + 0.5 * grad / jnp.linalg.norm(grad.reshape(n, -1), axis=1)[:, None, None, None]

    def gain(tokens):
        after = clip_guidance.clip_similarity(clip, moved, t, tokens)
        return np.asarray(after - clip_guidance.clip_similarity(clip, x_t, t, tokens))

    to_target, to_other = gain(target), gain(other)
    assert (to_target > 0).all(), to_target  # an ascent step on the target's similarity
    # It is the target's gradient, not a direction every caption likes: the other caption
    # gains less, on average and for most images (150 steps leave the tiny CLIP weak).
    assert to_target.mean() > 1.5 * to_other.mean(), (to_target, to_other)
    assert (to_target > to_other).mean() >= 0.75, (to_target, to_other)


def test_clip_guided_mean_shifts_the_mean_by_scale_variance_grad():
    keys = jax.random.split(jax.random.key(6), 3)
    mean = jax.random.normal(keys[0], (2, 4, 4, 3))
    grad = jax.random.normal(keys[1], (2, 4, 4, 3))
    variance = jnp.array([0.5, 0.01]).reshape(2, 1, 1, 1)
    got = clip_guidance.clip_guided_mean(mean, variance, grad, 3.0)
    expected = np.asarray(mean) + 3.0 * np.array([0.5, 0.01])[:, None, None, None] * grad
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_array_equal(clip_guidance.clip_guided_mean(mean, variance, grad, 0.0), mean)


def test_tiny_config_trains_a_step_and_reports_retrieval_accuracy(tmp_path):
    config = clip_shapes.get_config("tiny")
    config.train.update(dict(steps=1, log_every=1, eval_every=1, checkpoint_every=1))
    state = run(config, str(tmp_path))
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params["model"]))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = next(x for x in lines if "eval/image_to_caption" in x)
    names = ["image_to_caption", "caption_to_image"] + [
        f"image_to_caption_t{t}" for t in config.clip.eval_timesteps
    ]
    for name in names:
        assert 0.0 <= evals[f"eval/{name}"] <= 1.0, name


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("clip.embed_dim", -4, "clip.embed_dim must be a positive integer, got -4"),
        ("data.name", "digits", "data.name must be 'shapes', got 'digits'"),
        ("clip.text_heads", 3, "clip.text_dim=16 is not divisible by text_heads=3"),
        ("clip.ch_mult", (1, 2, 2, 2, 2, 2), "data.image_size=16 is not divisible by 32"),
        ("clip.num_res_blocks", 0, "clip.num_res_blocks must be a positive integer, got 0"),
        ("clip.eval_timesteps", (1000,), r"in \[0, diffusion.timesteps=1000\), got 1000"),
        ("diffusion.schedule", "quadratic", "diffusion.schedule='quadratic'; choose one of"),
    ],
)
def test_bad_config_raises_before_anything_compiles(field, value, message, tmp_path, monkeypatch):
    config = clip_shapes.get_config("tiny")
    section, key = field.split(".")
    config[section][key] = value

    def no_trainer(*args, **kwargs):
        raise AssertionError("the config was accepted: a Trainer was built")

    monkeypatch.setattr(loop, "Trainer", no_trainer)
    with pytest.raises(ValueError, match=message):
        run(config, str(tmp_path))
