"""The reference networks' shared fit loop: one compilation, and weights that depend only on
the arguments (not on the process's hash seed)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest

from zoo.evals import digits_classifier as dc
from zoo.evals import reference_fit

DIGESTS = """
import hashlib, jax, numpy as np
from zoo.evals import digits_classifier as dc, shapes_classifier as sc
def digest(params):
    return hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(params)))
print(digest(dc.DigitsFeatures.train(steps=5)._params).hexdigest())
print(digest(sc.ShapesClassifier.train(8, num_train=64, steps=5)._params).hexdigest())
"""


def test_one_compilation_serves_every_train_call():
    # The step's network, loss and optimizer are static jit arguments; a fresh closure per
    # call would recompile, and an unjitted step (as digits had) trains 10-30x slower.
    dc.DigitsFeatures.train(steps=3)
    compiled = reference_fit._step._cache_size()
    dc.DigitsFeatures.train(steps=4, seed=1)
    assert reference_fit._step._cache_size() == compiled


@pytest.mark.slow
def test_weights_do_not_depend_on_the_process():
    # Python's str hashes (set and dict-of-set orders) change with PYTHONHASHSEED. The
    # processes share this machine's cores: XLA:CPU's reductions depend on their number.
    with contextlib.redirect_stdout(io.StringIO()) as here:
        exec(DIGESTS, {})
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", DIGESTS], env=env, capture_output=True, text=True, check=True
        )
        assert run.stdout == here.getvalue()
