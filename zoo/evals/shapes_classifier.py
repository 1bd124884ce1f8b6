"""A small convnet that reads shape, colour and position off `shapes` images: the caption judge.

A text-to-image model trained on `shapes` should draw what its caption says. No pretrained
CLIP can be downloaded offline, and the captions name only three attributes, so the zoo
measures text alignment with this network instead: three classification heads (shape 3,
colour 6, position 9) on the generated images, compared with the attributes of the caption
the images were conditioned on (`caption_match`). Like CLIP score for large models, it
judges alignment, not image quality.

Numbers from different `image_size`/`num_train`/`steps`/`seed` come from different networks
and are not comparable.

    clf = ShapesClassifier.train(image_size=16, cache_path="/tmp/shapes_classifier_16.npz")
    clf.held_out_accuracy  # {"shape", "color", "position", "all"} on the shapes eval split
    caption_match(samples, batch["shape"], batch["color"], batch["position"], clf)
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from zoo.data import shapes
from zoo.evals.reference_cache import load_cache, save_cache
from zoo.evals.reference_fit import fit_classifier

CACHE_FORMAT = 1
HEADS = {
    "shape": len(shapes.SHAPES),
    "color": len(shapes.COLORS),
    "position": len(shapes.POSITIONS),
}
EVAL_SIZE = 1000  # the shapes eval split at its default size (data.num_eval)
DATASET_SEED = 0  # the data pipeline's default data.dataset_seed
_BATCH = 256  # images per prediction call


class ShapesConvNet(nnx.Module):
    """3x3 convs down to 4x4 -> dense ``feature_dim`` (ReLU) -> three linear heads.

    Up to 16x16 the first conv keeps full resolution, since at 16 pixels a shape is 3-4
    pixels across and a circle differs from a square in a pixel or two; larger inputs halve
    from the first layer on, so the cost stays near the 16x16 one (32: 16x16x16 -> 8x8x32 ->
    4x4x64). Flattening the 4x4 map (no global pooling) keeps where the shape is.
    """

    def __init__(self, image_size: int, *, rngs: nnx.Rngs, width: int = 16, feature_dim: int = 128):
        convs, size, channels, out = [], image_size, 3, width
        while size > 4 or not convs:
            stride = 2 if size > 16 or convs else 1
            convs.append(nnx.Conv(channels, out, (3, 3), strides=stride, rngs=rngs))
            size, channels, out = -(-size // stride), out, min(2 * out, 64)
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(size * size * channels, feature_dim, rngs=rngs)
        self.heads = nnx.Dict({k: nnx.Linear(feature_dim, n, rngs=rngs) for k, n in HEADS.items()})

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """``[B, S, S, 3]`` in [-1, 1] -> logits ``{"shape": [B, 3], "color": [B, 6],
        "position": [B, 9]}``."""
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        h = jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1)))
        return {k: head(h) for k, head in self.heads.items()}


@functools.cache
def shapes_split(train: bool, num_examples: int, image_size: int) -> dict[str, np.ndarray]:
    """The first ``num_examples`` of a shapes split: ``image`` ``[N, S, S, 3]`` in [-1, 1] and
    the int32 ``shape``, ``color``, ``position`` ``[N]``. Read-only: cached and shared."""
    examples = shapes.ShapesExamples(num_examples, image_size, 3, DATASET_SEED, train)
    batch = examples.load(np.arange(num_examples))
    out = {k: batch[k] for k in ("image", *HEADS)}
    for array in out.values():
        array.setflags(write=False)
    return out


def _optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    # Cosine decay to zero: the last steps settle the borderline cases (small or jittered
    # shapes) that a constant rate keeps flipping.
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps))


def _cross_entropy(model: ShapesConvNet, batch: dict[str, jax.Array]) -> jax.Array:
    """The three heads' mean cross-entropies, summed: ``image`` ``[B, S, S, 3]``, and ``[B]``
    int labels per head."""
    logits = model(batch["image"])
    return sum(
        optax.softmax_cross_entropy_with_integer_labels(logits[k], batch[k]).mean() for k in HEADS
    )


def _fit(graphdef, abstract, config: dict):
    """Parameters of ``ShapesConvNet`` trained as ``config`` (see ``ShapesClassifier.train``)."""
    return fit_classifier(
        graphdef,
        abstract,
        _cross_entropy,
        _optimizer,
        (config["learning_rate"], config["steps"]),
        shapes_split(True, config["num_train"], config["image_size"]),
        steps=config["steps"],
        batch_size=config["batch_size"],
        seed=config["seed"],
    )


@functools.partial(jax.jit, static_argnums=0)
def _predict(graphdef, params, x):
    """``[B, S, S, 3]`` -> ``{head: [B] int32}`` argmax predictions."""
    logits = nnx.merge(graphdef, params)(x)
    return {k: v.argmax(-1).astype(jnp.int32) for k, v in logits.items()}


class ShapesClassifier:
    """A trained, frozen ``ShapesConvNet``; build it with ``ShapesClassifier.train``.

    Attributes:
      image_size: the S of the ``[N, S, S, 3]`` images it accepts.
      held_out_accuracy: ``{"shape", "color", "position", "all"}`` accuracy on the 1000
        examples of the shapes eval split ("all": every attribute right).
      config: what determines the network (image_size, num_train, steps, seed, ...).
    """

    def __init__(self, graphdef, params, config: dict, held_out_accuracy: dict[str, float]):
        self.config = dict(config)
        self.image_size = int(config["image_size"])
        self.held_out_accuracy = dict(held_out_accuracy)
        self._graphdef, self._params = graphdef, params

    @classmethod
    def train(
        cls,
        image_size: int,
        cache_path: str | None = None,
        *,
        num_train: int = 4000,
        steps: int = 800,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        seed: int = 0,
    ) -> ShapesClassifier:
        """Train on the first ``num_train`` shapes train examples, or load from ``cache_path``.

        Deterministic given the arguments on one machine, trained on the CPU; across
        machines the last bits can differ (see ``DigitsFeatures.train``; at the defaults, 1
        core vs 2: other weights, the same held-out accuracy). With ``cache_path`` (``.npz``),
        an existing cache trained with the same arguments is loaded; a missing one is written
        after training; an unreadable one is reported with a warning, retrained and
        overwritten; one trained with other arguments is an error, since its numbers would
        not be comparable.
        """
        if not isinstance(image_size, int) or not 8 <= image_size <= 64:
            raise ValueError(f"image_size must be an int in [8, 64]; got {image_size!r}")
        for name, value in (("num_train", num_train), ("steps", steps), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        config = {
            "format": CACHE_FORMAT,
            "image_size": image_size,
            "num_train": num_train,
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "seed": seed,
        }
        graphdef, abstract = nnx.split(
            nnx.eval_shape(lambda: ShapesConvNet(image_size, rngs=nnx.Rngs(seed)))
        )
        if cache_path is not None and os.path.exists(cache_path):
            loaded = load_cache(cache_path, config, abstract, "shapes classifier cache")
            if loaded is not None:
                return cls(graphdef, loaded[0], config, held_out_accuracy=loaded[1])
        params = _fit(graphdef, abstract, config)
        classifier = cls(graphdef, params, config, held_out_accuracy={})
        held_out = shapes_split(False, EVAL_SIZE, image_size)
        match = caption_match(held_out["image"], *(held_out[k] for k in HEADS), classifier)
        classifier.held_out_accuracy = {
            **{k: match[f"{k}_acc"] for k in HEADS},
            "all": match["caption_match"],
        }
        if cache_path is not None:
            save_cache(cache_path, config, params, classifier.held_out_accuracy)
        return classifier

    def predict(self, images) -> dict[str, np.ndarray]:
        """``[N, S, S, 3]`` in [-1, 1] -> ``{"shape", "color", "position"}``: ``[N]`` int32 indices
        into ``shapes.SHAPES``, ``shapes.COLORS``, ``shapes.POSITIONS``.

        Values are clipped to [-1, 1] first: what is judged is what a saved image shows.
        """
        x = np.clip(np.asarray(images, np.float32), -1.0, 1.0)
        expected = (self.image_size, self.image_size, 3)
        if x.ndim != 4 or x.shape[1:] != expected or len(x) == 0:
            raise ValueError(
                f"images must be [N > 0, {self.image_size}, {self.image_size}, 3] in [-1, 1] "
                f"(this classifier was trained at image_size={self.image_size}); got {x.shape}"
            )
        out = {k: [] for k in HEADS}
        for start in range(0, len(x), _BATCH):
            chunk = x[start : start + _BATCH]
            # Padded to a fixed batch size: one compilation serves every N.
            padded = np.pad(chunk, [(0, _BATCH - len(chunk)), (0, 0), (0, 0), (0, 0)])
            for k, v in _predict(self._graphdef, self._params, padded).items():
                out[k].append(np.asarray(v)[: len(chunk)])
        return {k: np.concatenate(v) for k, v in out.items()}


def caption_match(images, shape, color, position, classifier: ShapesClassifier) -> dict:
    """How well ``images`` ``[N, S, S, 3]`` in [-1, 1] show the attributes they were asked for.

    Args:
      images: generated (or real) images, in the classifier's ``image_size``.
      shape, color, position: ``[N]`` int attribute indices of each image's caption (the
        ``shape``, ``color``, ``position`` fields of a shapes batch).
      classifier: a trained ``ShapesClassifier``.

    Returns:
      A dict of floats in [0, 1]: ``caption_match``, the share of images whose three
      predicted attributes all equal the caption's (1/162 by chance), and ``shape_acc``,
      ``color_acc``, ``position_acc``, the share right per attribute.
    """
    return match_predictions(classifier.predict(images), shape, color, position)


def match_predictions(predicted: dict, shape, color, position) -> dict:
    """:func:`caption_match`'s scores from ``predicted`` (:meth:`ShapesClassifier.predict`'s
    output for the images), for a caller that also needs the predictions themselves."""
    n = len(predicted["shape"])
    right = {}
    for k, wanted in zip(HEADS, (shape, color, position), strict=True):
        wanted = np.asarray(wanted)
        if wanted.shape != (n,) or not np.issubdtype(wanted.dtype, np.integer):
            raise ValueError(f"{k} must be [N={n}] int indices; got {wanted.dtype} {wanted.shape}")
        if wanted.min() < 0 or wanted.max() >= HEADS[k]:
            raise ValueError(
                f"{k} indices must lie in [0, {HEADS[k]}); got {wanted.min()}..{wanted.max()}"
            )
        right[k] = predicted[k] == wanted
    all_right = right["shape"] & right["color"] & right["position"]
    return {
        "caption_match": float(all_right.mean()),
        **{f"{k}_acc": float(v.mean()) for k, v in right.items()},
    }


def confusion(wanted, predicted, names) -> dict[str, dict[str, int]]:
    """``{wanted name: {predicted name: count}}`` for ``[N]`` int indices into ``names``.

    E.g. ``confusion(batch["shape"], classifier.predict(images)["shape"], shapes.SHAPES)``:
    which shapes a tokenizer's reconstructions turn into.
    """
    wanted, predicted = np.asarray(wanted), np.asarray(predicted)
    return {
        name: {other: int(np.sum(predicted[wanted == i] == j)) for j, other in enumerate(names)}
        for i, name in enumerate(names)
    }
