"""A small convnet on the bundled digits: features for Fréchet distance, and a judge of samples.

Inception-v3 cannot be downloaded offline and means little on 8x8 digits, so the zoo's
sample-quality number on ``digits`` comes from this network instead: FD between Gaussians
of its penultimate features (a digits analogue of FID), plus two properties of its
predictions on the samples, the share classified confidently and the entropy of the
predicted-class histogram (mode dropping shows up as low entropy).

Numbers from different ``image_size``/``seed``/``steps`` come from different networks and
are not comparable; neither are FDs at different sample sizes (FD is biased upwards at
small N, so ``digits_real_floor`` gives what a perfect generator would get at the same N).

    feats = DigitsFeatures.train(image_size=8, cache_path="/tmp/digits_features_8.npz")
    digits_frechet_distance(samples, feats)  # samples: [N, 8, 8, 1] in [-1, 1]
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from zoo.data import make_eval_source, make_source
from zoo.evals.frechet import frechet_distance, gaussian_stats
from zoo.evals.reference_cache import load_cache, save_cache
from zoo.evals.reference_fit import fit_classifier

Split = Literal["train", "test"]
CACHE_FORMAT = 1
NUM_CLASSES = 10
CONFIDENT = 0.9  # a prediction counts as confident above this softmax probability
_BATCH = 256  # images per feature-extraction call


class DigitsConvNet(nnx.Module):
    """3x3 convs down to 4x4 -> dense ``feature_dim`` (ReLU) -> dense 10.

    8x8 input: 8x8x16 -> 4x4x32 -> 128 -> 10 (about 70k parameters). Larger inputs halve
    from the first layer on (16: 8x8x16 -> 4x4x32; 32: 16x16x16 -> 8x8x32 -> 4x4x64), so
    the cost stays near the 8x8 one; a 3x3 stride-2 kernel still sees every pixel, so
    high-frequency artefacts of upscaled samples still reach the features.
    """

    def __init__(self, image_size: int, *, rngs: nnx.Rngs, width: int = 16, feature_dim: int = 128):
        # He-normal, untruncated: the same law _initial_params draws from with numpy.
        init = {"kernel_init": nnx.initializers.variance_scaling(2.0, "fan_in", "normal")}
        convs, size, channels, out = [], image_size, 1, width
        while size > 4 or not convs:
            stride = 2 if size > 8 or convs else 1  # 8x8 digits get one full-resolution layer
            convs.append(nnx.Conv(channels, out, (3, 3), strides=stride, rngs=rngs, **init))
            size, channels, out = -(-size // stride), out, min(2 * out, 64)
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(size * size * channels, feature_dim, rngs=rngs, **init)
        self.head = nnx.Linear(feature_dim, NUM_CLASSES, rngs=rngs, **init)

    def features(self, x: jax.Array) -> jax.Array:
        """``[B, S, S, 1]`` in [-1, 1] -> ``[B, feature_dim]`` post-ReLU penultimate features."""
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, S, S, 1]`` -> logits ``[B, 10]``."""
        return self.head(self.features(x))


@functools.cache
def digits_split(split: Split, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Real digits of the house split: images ``[N, S, S, 1]`` float32 in [-1, 1], labels ``[N]``.

    N = 1500 (train, in the data pipeline's fixed epoch-0 order) or 297 (test), read
    through ``zoo.data`` so they are resized exactly as a generator's training data.
    Read-only: the arrays are cached and shared.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    cfg = ml_collections.ConfigDict({"name": "digits", "image_size": image_size})
    if split == "train":
        num_examples = make_source(cfg, seed=0, examples_per_step=1).num_examples
        batch = make_source(cfg, seed=0, examples_per_step=num_examples).batch(0)
    else:
        source = make_eval_source(cfg)
        (batch,) = source.batches(batch_size=source.num_examples)
    for array in batch.values():
        array.setflags(write=False)
    return batch["image"], batch["label"]


def _cross_entropy(model: DigitsConvNet, batch: dict[str, jax.Array]) -> jax.Array:
    """Mean cross-entropy of a batch: ``image`` ``[B, S, S, 1]``, ``label`` ``[B]``."""
    return optax.softmax_cross_entropy_with_integer_labels(
        model(batch["image"]), batch["label"]
    ).mean()


def _fit(graphdef, abstract, config: dict):
    """Parameters of ``DigitsConvNet`` trained as ``config`` (see ``DigitsFeatures.train``) says."""
    images, labels = digits_split("train", config["image_size"])
    return fit_classifier(
        graphdef,
        abstract,
        _cross_entropy,
        optax.adam,
        (config["learning_rate"],),
        {"image": images, "label": labels},
        steps=config["steps"],
        batch_size=config["batch_size"],
        seed=config["seed"],
    )


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, params, x):
    """``[B, S, S, 1]`` -> (features ``[B, D]``, class probabilities ``[B, 10]``)."""
    model = nnx.merge(graphdef, params)
    features = model.features(x)
    return features, jax.nn.softmax(model.head(features))


class DigitsFeatures:
    """A trained, frozen ``DigitsConvNet``; build it with ``DigitsFeatures.train``.

    Attributes:
      image_size: the S of the ``[N, S, S, 1]`` images it accepts.
      held_out_accuracy: accuracy on the 297 test digits.
      config: what determines the network (image_size, seed, steps, ...).
    """

    def __init__(self, graphdef, params, config: dict, held_out_accuracy: float):
        self.config = dict(config)
        self.image_size = int(config["image_size"])
        self.held_out_accuracy = float(held_out_accuracy)
        self._graphdef, self._params = graphdef, params
        self._reference: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def train(
        cls,
        image_size: int = 8,
        seed: int = 0,
        steps: int = 1000,
        cache_path: str | None = None,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
    ) -> DigitsFeatures:
        """Train on the 1500 train digits at ``image_size``, or load from ``cache_path``.

        Deterministic given the arguments: bit-identical weights from every call and process
        on one machine, trained on the CPU (``reference_device``) even where a GPU is the
        default device. Across machines the last bits can differ, and training carries them
        on: XLA:CPU splits its reductions by the number of cores it sees (and may round
        otherwise on another instruction set). Measured at the defaults, 1 core vs 2
        (``taskset -c 0``): other weights, the same held-out accuracy (0.9798), FDs 1e-5 to
        2e-4 apart relative (real floor at N = 297: 15.735687 vs 15.735475; uniform noise:
        369.032 vs 369.096).
        Compare FDs from one cache file to be exact.

        With ``cache_path`` (``.npz``), an existing cache trained with the same arguments is
        loaded; a missing one is written after training; an unreadable one is
        reported with a warning, retrained and overwritten; one trained with other
        arguments is an error, since its numbers would not be comparable.
        """
        config = {
            "format": CACHE_FORMAT,
            "image_size": image_size,
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        }
        graphdef, abstract = nnx.split(
            nnx.eval_shape(lambda: DigitsConvNet(image_size, rngs=nnx.Rngs(seed)))
        )
        if cache_path is not None and os.path.exists(cache_path):
            loaded = load_cache(cache_path, config, abstract, "digits feature cache")
            if loaded is not None:
                return cls(graphdef, loaded[0], config, held_out_accuracy=loaded[1])
        params = _fit(graphdef, abstract, config)
        features = cls(graphdef, params, config, held_out_accuracy=float("nan"))
        test_images, test_labels = digits_split("test", image_size)
        features.held_out_accuracy = float(np.mean(features.predict(test_images)[0] == test_labels))
        if cache_path is not None:
            save_cache(cache_path, config, params, features.held_out_accuracy)
        return features

    def features_and_probabilities(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``[N, S, S, 1]`` in [-1, 1] -> (features ``[N, D]``, probabilities ``[N, 10]``).

        Values are clipped to [-1, 1] first: what is measured is what a saved image shows.
        """
        x = np.clip(np.asarray(images, np.float32), -1.0, 1.0)
        expected = (self.image_size, self.image_size, 1)
        if x.ndim != 4 or x.shape[1:] != expected or len(x) == 0:
            raise ValueError(
                f"images must be [N > 0, {self.image_size}, {self.image_size}, 1] in [-1, 1] "
                f"(this network was trained at image_size={self.image_size}); got {x.shape}"
            )
        features, probabilities = [], []
        for start in range(0, len(x), _BATCH):
            chunk = x[start : start + _BATCH]
            # Padded to a fixed batch size: one compilation serves every N.
            padded = np.pad(chunk, [(0, _BATCH - len(chunk)), (0, 0), (0, 0), (0, 0)])
            f, p = _apply(self._graphdef, self._params, padded)
            features.append(np.asarray(f)[: len(chunk)])
            probabilities.append(np.asarray(p)[: len(chunk)])
        return np.concatenate(features), np.concatenate(probabilities)

    def features(self, images) -> np.ndarray:
        """``[N, S, S, 1]`` in [-1, 1] -> ``[N, D]`` float32 penultimate features (D = 128)."""
        return self.features_and_probabilities(images)[0]

    def predict(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``[N, S, S, 1]`` -> (labels ``[N]``, confidence ``[N]``: the max softmax probability)."""
        probabilities = self.features_and_probabilities(images)[1]
        return probabilities.argmax(-1), probabilities.max(-1)

    def reference_stats(self, split: Split = "test") -> tuple[np.ndarray, np.ndarray]:
        """(mu ``[D]``, sigma ``[D, D]``) float64 of the real ``split``'s features; memoised."""
        if split not in self._reference:
            self._reference[split] = gaussian_stats(
                self.features(digits_split(split, self.image_size)[0])
            )
        return self._reference[split]


def digits_frechet_distance(images, features: DigitsFeatures, reference: Split = "test") -> dict:
    """Sample quality of ``images`` ``[N, S, S, 1]`` in [-1, 1] against real digits.

    Returns a dict of floats:
      fd: Fréchet distance between the samples' features and the real ``reference``
        split's (297 test or 1500 train images). Compare only at equal N; see
        ``digits_real_floor``.
      confident_share: share of samples classified with probability > 0.9.
      class_entropy: entropy (nats) of the predicted-class histogram; ln 10 = 2.303 when
        all classes are equally frequent, 0 when every sample is one digit.
    """
    feats, probabilities = features.features_and_probabilities(images)
    histogram = np.bincount(probabilities.argmax(-1), minlength=NUM_CLASSES) / len(feats)
    nonzero = histogram[histogram > 0]
    return {
        "fd": frechet_distance(*gaussian_stats(feats), *features.reference_stats(reference)),
        "confident_share": float(np.mean(probabilities.max(-1) > CONFIDENT)),
        "class_entropy": float(-(nonzero * np.log(nonzero)).sum()),
    }


def digits_real_floor(
    features: DigitsFeatures, num_samples: int, reference: Split = "test", seed: int = 0
) -> dict:
    """``digits_frechet_distance`` of ``num_samples`` real digits: what a perfect generator gets.

    The real images are drawn without replacement from the split that is not
    ``reference`` (reference "test": from the 1500 train digits; "train": from the 297
    test digits), so they are independent of the reference, as a generator's samples are.
    """
    source: Split = "train" if reference == "test" else "test"
    images = digits_split(source, features.image_size)[0]
    if not 2 <= num_samples <= len(images):
        raise ValueError(f"num_samples={num_samples}; the {source} split holds {len(images)}")
    chosen = np.random.default_rng(seed).choice(len(images), num_samples, replace=False)
    return digits_frechet_distance(images[chosen], features, reference)
