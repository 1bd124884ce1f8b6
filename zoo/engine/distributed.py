"""Multi-host start-up: join the other processes of a run before JAX touches a device.

Three ways a run gets several processes, each process running the same command:

- Explicit: ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``
  and ``JAX_PROCESS_ID`` in every process's environment (how the tests start several
  CPU processes on localhost).
- A cluster JAX detects by itself (TPU pod slices, SLURM, Open MPI, Kubernetes Jobs):
  ``jax.distributed.initialize()`` with no arguments finds the coordinator, the
  process count and this process's id.
- Neither: a plain single-machine run; nothing is initialised.

``jax.distributed.initialize`` must run before anything that creates the XLA
backend (``jax.devices()``, ``jax.process_count()``, any computation); it raises
otherwise. ``zoo.main`` calls :func:`maybe_initialize_distributed` first thing.
"""

from __future__ import annotations

import logging
import os
import warnings

import jax

log = logging.getLogger(__name__)


def detected_cluster() -> tuple[str, int] | None:
    """(name, process count) of the cluster JAX's auto-detection would use, or None.

    Asks the same detectors, in the same order, as ``jax.distributed.initialize()``
    without arguments (``jax._src.clusters``: Cloud TPU, SLURM, Open MPI, Kubernetes;
    mpi4py is opt-in there and here). Private API: if a JAX release moves it, auto
    detection is off and the explicit variables still work.
    """
    try:
        from jax._src.clusters import ClusterEnv

        detectors = [c for c in ClusterEnv._cluster_types if not c.opt_in_only_method]
    except (ImportError, AttributeError) as err:
        log.warning("cluster auto-detection unavailable in this JAX (%s)", err)
        return None
    for env in detectors:
        with warnings.catch_warnings():  # e.g. "Kubernetes detected, package missing"
            warnings.simplefilter("ignore")
            present = env.is_env_present()
        if present:
            try:
                return env.__name__, int(env.get_process_count())
            except Exception as err:  # noqa: BLE001 - a detector that cannot answer
                log.warning(
                    "%s detected but its process count is unknown (%s); running as one "
                    "process (set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                    "JAX_PROCESS_ID to join a multi-process run)",
                    env.__name__,
                    err,
                )
                return None
    return None


def initialize_arguments() -> dict | None:
    """Arguments for ``jax.distributed.initialize``, or None for a single-process run."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        # jax reads the address from the environment itself, but not the count and
        # id; those it leaves missing, it asks the cluster detectors for.
        args = {}
        for key, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
            if name in os.environ:
                args[key] = int(os.environ[name])
        return args
    cluster = detected_cluster()
    if cluster is not None and cluster[1] > 1:
        log.info("multi-process run detected: %s with %d processes", *cluster)
        return {}
    return None


def use_cpu_collectives() -> None:
    """Cross-process collectives for the CPU backend: gloo over TCP, unless one is chosen.

    Without an implementation, a CPU computation over devices of several processes
    fails. The flag is read when the CPU client is created (at initialisation), and
    only by the CPU client, so setting it costs GPU/TPU runs nothing. JAX 0.10.2
    already defaults to gloo; this keeps that true if the default changes, and
    leaves an explicit choice (``mpi``) alone.
    """
    platforms = jax.config.jax_platforms or ""
    if platforms and "cpu" not in platforms.split(","):
        return
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def maybe_initialize_distributed() -> bool:
    """Join a multi-process run when the environment describes one; returns whether it did.

    Call before anything creates the XLA backend. Calling it again is a no-op.
    """
    if jax.distributed.is_initialized():
        return False
    args = initialize_arguments()
    if args is None:
        return False
    use_cpu_collectives()
    jax.distributed.initialize(**args)
    log.info(
        "process %d of %d; %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
