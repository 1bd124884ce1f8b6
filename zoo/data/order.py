"""Which example sits at global position g, and whether it is flipped: pure functions of seeds.

The training stream is indexed by g = step * examples_per_step + j. Epoch e = g // N reads the
N examples through a permutation drawn from (seed, e); the flip of position g is a hash of
(seed, g). Nothing here has state, so a resumed run needs only the step number (the big_vision
habit of deriving randomness from the step rather than checkpointing it).
"""

import numpy as np

# Distinct stream tags so the epoch permutations and the holdout split never share randomness.
_PERMUTATION_STREAM = 1
_HOLDOUT_STREAM = 2


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the examples: `[N] int64`, a permutation."""
    rng = np.random.default_rng([_PERMUTATION_STREAM, seed, epoch])
    return rng.permutation(num_examples)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a fast, well-mixed hash of uint64 arrays."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def coin_flips(seed: int, positions: np.ndarray) -> np.ndarray:
    """A fair coin per global position, `[B] bool`, fixed by (seed, position) alone.

    A hash instead of a generator per example: vectorised, and independent of batch layout.
    """
    key = _splitmix64(np.array([seed % 2**64], np.uint64))
    hashed = _splitmix64(key ^ np.asarray(positions).astype(np.uint64))
    return (hashed >> np.uint64(63)) == 1


def holdout_split(num_examples: int, num_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically set aside `num_eval` of `num_examples` for evaluation.

    Returns:
      (train_indices, eval_indices): sorted `int64` arrays that partition `range(num_examples)`.
    """
    if not 0 <= num_eval < num_examples:
        raise ValueError(f"cannot hold out {num_eval} of {num_examples} examples")
    order = np.random.default_rng([_HOLDOUT_STREAM, seed]).permutation(num_examples)
    return np.sort(order[num_eval:]), np.sort(order[:num_eval])


def eval_count(num_examples: int, eval_fraction: float) -> int:
    """How many examples `eval_fraction` holds out: rounded, at least one when fraction > 0."""
    if eval_fraction <= 0:
        return 0
    return min(max(1, round(eval_fraction * num_examples)), num_examples - 1)
