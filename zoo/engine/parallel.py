"""Devices, meshes and the two ways to run the step: ``jit`` over a mesh, or ``pmap``.

jit (default): one program over a ``Mesh`` with axes ``data`` and ``fsdp`` (sizes from
``config.mesh``); the batch is a global array sharded on its example axis over both, the
state donated and, with ``fsdp`` > 1, sharded by :func:`fsdp_spec` (each large tensor split
on one dimension over ``fsdp``; XLA gathers it where the step needs it whole).
pmap: the same pure step under ``jax.pmap`` with ``lax.pmean``; the state carries a
leading device axis. All give the same numbers (per-example RNG).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PARALLEL_MODES = ("jit", "pmap")
AXIS = "data"
FSDP = "fsdp"
BATCH = (AXIS, FSDP)  # the mesh axes the example axis is split over, under jit
# Tensors smaller than this stay replicated under fsdp: gathering them would cost more
# time than their copies cost memory (biases, norms, embeddings of small tables).
FSDP_MIN_SIZE = 2**14


def mesh_shape(
    data: int, fsdp: int, devices: int | None = None, mode: str = "jit"
) -> tuple[int, int]:
    """``(data, fsdp)`` axis sizes for ``devices`` (default: all); one may be -1: the rest."""
    devices = jax.device_count() if devices is None else devices
    sizes = {"data": data, "fsdp": fsdp}
    for name, size in sizes.items():
        if size == 0 or size < -1:
            raise ValueError(f"mesh.{name}={size}; use a positive size or -1 (the rest)")
    rest = [name for name, size in sizes.items() if size == -1]
    if len(rest) > 1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1 (the rest of the devices)")
    if rest:
        known = math.prod(size for size in sizes.values() if size != -1)
        if devices % known:
            raise ValueError(f"mesh {sizes}: {known} does not divide the {devices} devices")
        sizes[rest[0]] = devices // known
    if sizes["data"] * sizes["fsdp"] != devices:
        raise ValueError(
            f"mesh.data={sizes['data']} x mesh.fsdp={sizes['fsdp']} must be the {devices} devices"
        )
    if mode == "pmap" and sizes["fsdp"] > 1:
        raise ValueError(
            f"mesh.fsdp={sizes['fsdp']} needs parallel='jit' (pmap keeps the whole state on "
            "every device)"
        )
    return sizes["data"], sizes["fsdp"]


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """Where a state tensor of ``shape`` lives: split over ``fsdp`` on its largest dimension
    that ``fsdp`` divides (the first such, on ties), or replicated when ``fsdp`` is 1, the
    tensor has fewer than ``min_size`` entries or no dimension divides."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*([None] * dim), FSDP)
    return P()


def shardings_of(abstract):
    """The ``sharding`` of each ``jax.ShapeDtypeStruct`` leaf of ``abstract``."""
    return jax.tree.map(lambda x: x.sharding, abstract)


def enable_compilation_cache(default_dir: str = "~/.cache/zoo/xla") -> None:
    """Keep compiled programs on disk, so a resumed or repeated run skips recompiling.

    ``JAX_COMPILATION_CACHE_DIR`` (if set) wins. Small programs are cached too:
    model initialisation compiles many tiny ones, which add up to seconds.
    """
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser(default_dir)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def check_batch_layout(global_batch: int, microbatches: int, mode: str) -> None:
    """Clear errors, before compiling, for batches that don't fit the devices."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel={mode!r}; choose one of {PARALLEL_MODES}")
    devices, processes = jax.device_count(), jax.process_count()
    if microbatches < 1 or global_batch % microbatches:
        raise ValueError(
            f"data.batch_size={global_batch} is not divisible by optim.microbatches={microbatches}"
        )
    micro = global_batch // microbatches
    if micro % devices:
        raise ValueError(
            f"the microbatch of {micro} examples (data.batch_size={global_batch} / "
            f"optim.microbatches={microbatches}) is not divisible by the {devices} devices; "
            f"use a batch size that is a multiple of {devices * microbatches}"
        )
    if micro % processes:
        raise ValueError(f"microbatch {micro} not divisible by {processes} processes")


class Runner:
    """Places state and batches and compiles the step for one parallel mode."""

    def __init__(self, mode: str, *, data: int = -1, fsdp: int = 1, min_size: int = FSDP_MIN_SIZE):
        self.mode = mode
        data, self.fsdp = mesh_shape(data, fsdp, mode=mode)
        self.min_size = min_size
        # Device order kept (process-major): each process's devices hold a contiguous run
        # of the batch, as make_array_from_process_local_data assumes.
        self.mesh = Mesh(np.array(jax.devices()).reshape(data, self.fsdp), BATCH)
        self.replicated = NamedSharding(self.mesh, P())
        self.local_devices = jax.local_device_count()
        # pmap layout: a leading axis of one entry per local device.
        self.per_device = NamedSharding(Mesh(np.array(jax.local_devices()), (AXIS,)), P(AXIS))

    # -- batches ---------------------------------------------------------
    def batch_sharding(self, ndim: int) -> NamedSharding:
        """Leaves are [S, A, B, ...]: shard B over every device."""
        return NamedSharding(self.mesh, P(None, None, BATCH, *([None] * (ndim - 3))))

    def put_batch(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
        """This process's [S, A, B_local, ...] numpy batch -> device arrays."""
        if self.mode == "pmap":
            n = self.local_devices

            def split(x):  # [S, A, B, ...] -> [n, S, A, B/n, ...]
                s, a, b = x.shape[:3]
                x = x.reshape(s, a, n, b // n, *x.shape[3:])
                return np.moveaxis(x, 2, 0)

            return jax.device_put({k: split(v) for k, v in local.items()}, self.per_device)
        return {
            k: jax.make_array_from_process_local_data(self.batch_sharding(v.ndim), v)
            for k, v in local.items()
        }

    def put_examples(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """A whole [B, ...] batch (eval data, same on every process), sharded on B.

        Each process places only the slices of its own devices. (``device_put``
        would too, but with several processes it first all-gathers the whole
        batch to check that every process passed the same one.)
        """
        sharding = NamedSharding(self.mesh, P(BATCH))

        def place(v):
            v = np.asarray(v)
            return jax.make_array_from_callback(v.shape, sharding, lambda index: v[index])

        return {k: place(v) for k, v in batch.items()}

    # -- state -----------------------------------------------------------
    def init_state(self, init_fn: Callable[..., Any], abstract_state, *args) -> Any:
        """Run ``init_fn(*args)`` under jit straight into the placement ``abstract_state``
        (from :meth:`abstract_state`) names."""
        state = jax.jit(init_fn, out_shardings=shardings_of(abstract_state))(*args)
        return self.replicate(state) if self.mode == "pmap" else state

    def replicate(self, state):
        """A globally placed state -> per-device copies (pmap layout)."""
        if self.mode != "pmap":
            return state
        n = self.local_devices
        stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *x.shape)), state)
        return jax.device_put(stacked, self.per_device)

    def unreplicate(self, state):
        """The state in the jit layout (what checkpoints and samplers see).

        Built from each local device's own copy, with no computation across
        devices: ``x[0]`` would be one, and with several processes on CPU it
        deadlocks (measured on jax 0.10.2 with gloo); it would also leave the
        state on one device of each process, not in the jit layout.
        """
        if self.mode != "pmap":
            return state

        def one(x):  # [local devices, ...] -> [...] replicated over the mesh
            shards = [s.data.reshape(x.shape[1:]) for s in x.addressable_shards]
            return jax.make_array_from_single_device_arrays(x.shape[1:], self.replicated, shards)

        return jax.tree.map(one, state)

    def abstract_state(self, shapes):
        """``shapes`` (``jax.eval_shape`` of the state), each leaf with its jit layout:
        :func:`fsdp_spec` of its shape."""
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape,
                x.dtype,
                sharding=NamedSharding(self.mesh, fsdp_spec(x.shape, self.fsdp, self.min_size)),
            ),
            shapes,
        )

    # -- step ------------------------------------------------------------
    def compile_step(self, step_fn: Callable, abstract_state) -> Callable:
        """``run(state, batch, active, frozen) -> (state, metrics)`` for this mode.

        ``frozen`` (the trained stages' variables, placed with :meth:`replicate`
        under pmap) is an argument, not donated: it is the same every step.
        """
        cache: dict[tuple[bool, ...], Callable] = {}

        def run(state, batch, active, frozen):
            if active not in cache:
                fn = lambda s, b, f, a=active: step_fn(s, b, a, f)  # noqa: E731
                if self.mode == "pmap":
                    cache[active] = jax.pmap(fn, axis_name=AXIS, donate_argnums=(0,))
                else:
                    state_shardings = shardings_of(abstract_state)
                    cache[active] = jax.jit(
                        fn,
                        in_shardings=(state_shardings, None, self.replicated),
                        out_shardings=(state_shardings, self.replicated),
                        donate_argnums=(0,),
                    )
            return cache[active](state, batch, frozen)

        return run

    def metrics_to_host(self, metrics) -> dict[str, float]:
        metrics = jax.device_get(metrics)
        if self.mode == "pmap":
            metrics = jax.tree.map(lambda x: x[0], metrics)
        return {k: float(v) for k, v in metrics.items()}
