"""The one fit loop of the reference networks (digits features, shapes classifier).

Minibatch training of an nnx network on in-memory arrays: numpy He-normal initialisation
from ``seed`` (``reference_cache.initial_params``), epochs in a ``seed``-fixed permutation,
one jitted optimizer step per minibatch. Every input that changes the weights is an argument,
so a network is a function of its arguments (on one machine; see ``DigitsFeatures.train``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx

from zoo.evals.reference_cache import initial_params

# loss(model, batch) -> scalar; a batch is ``data`` indexed by a minibatch.
Loss = Callable[[nnx.Module, dict[str, jax.Array]], jax.Array]


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4, 5))
def _step(graphdef, loss: Loss, optimizer, optimizer_args: tuple, params, opt_state, batch):
    """One optimizer step on ``loss`` over ``batch``.

    Static (graphdef, loss, optimizer and its arguments) rather than a closure, so that every
    ``train`` call with the same network and hyperparameters reuses one compilation.
    """
    value, grads = jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p), batch))(params)
    updates, opt_state = optimizer(*optimizer_args).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


def fit_classifier(
    graphdef,
    abstract,
    loss: Loss,
    optimizer: Callable[..., optax.GradientTransformation],
    optimizer_args: tuple,
    data: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    seed: int,
):
    """Parameters of the network ``(graphdef, abstract)`` after ``steps`` minibatch steps.

    Args:
      graphdef, abstract: ``nnx.split`` of the network (abstract: shapes only).
      loss: ``loss(model, batch) -> scalar``; a module-level function, since it is a static
        jit argument (a fresh lambda per call would recompile).
      optimizer, optimizer_args: ``optimizer(*optimizer_args)`` is the optax transformation;
        a module-level function and hashable arguments, for the same reason.
      data: ``{field: [N, ...]}`` numpy arrays, all of one length N.
      steps, batch_size: ``steps`` minibatches of ``batch_size`` examples.
      seed: fixes the initial parameters and the example order.

    Returns:
      The trained parameters (an ``nnx.State`` on ``reference_device()``).
    """
    params = initial_params(abstract, seed)
    opt_state = jax.jit(optimizer(*optimizer_args).init)(params)
    n = len(next(iter(data.values())))
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    # A Python loop over a jitted step, not one lax.scan: XLA:CPU ran these convs about
    # 15x slower inside a while loop (38 vs 2.4 ms a step at B = 64).
    for idx in order[: steps * batch_size].reshape(steps, batch_size):
        batch = {k: v[idx] for k, v in data.items()}
        params, opt_state, _ = _step(
            graphdef, loss, optimizer, optimizer_args, params, opt_state, batch
        )
    return params
