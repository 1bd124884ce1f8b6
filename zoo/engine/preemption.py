"""Stopping a run on SIGTERM/SIGINT at a step every process agrees on.

A scheduler that preempts a job (a TPU pod slice, SLURM, Kubernetes) sends SIGTERM and
gives a grace period. The loop asks :meth:`Preemption.stop_at` right after each step and,
when it says so, saves a checkpoint before any sample grid or eval.

- **One process**: Python handlers turn the signal into a flag; the loop stops after the
  step it is on.
- **Several processes**: the processes must stop, and save, at the *same* step: Orbax's
  save is a collective, and a process that saves while the others step on would hang the
  run. JAX's preemption service does the agreeing: ``jax.distributed.initialize`` installs
  a SIGTERM notifier in every process; a notice on any process starts a protocol in which
  each process reports the step it is on, and
  ``multihost_utils.reached_preemption_sync_point(step)`` turns True on every process at
  the same step (the largest reported + 1). So SIGTERM is left to that notifier (a Python
  handler would replace it), and a Ctrl-C on one process re-sends itself SIGTERM to
  notify the others. The loop must call :meth:`stop_at` at every step, from the same first
  step on all processes (a resumed run does: every process restores the same checkpoint).
"""

from __future__ import annotations

import logging
import os
import signal

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def _sync_manager_ready() -> bool:
    """Whether this multi-process run has JAX's preemption service (on by default;
    ``jax_enable_preemption_service`` turns it off)."""
    from jax._src import distributed  # the service's state has no public accessor

    return distributed.global_state.preemption_sync_manager is not None


class Preemption:
    """Context manager for the loop: ``stop_at(step)`` says whether to save and stop now.

    ``requested`` names what stopped the run (for the log), None until then. A second
    SIGINT aborts at once (KeyboardInterrupt), as Ctrl-C twice should.
    """

    def __init__(self):
        self.requested: str | None = None
        self._old: dict = {}
        self._agreed = jax.process_count() > 1 and _sync_manager_ready()
        if jax.process_count() > 1 and not self._agreed:
            log.warning(
                "JAX's preemption service is off (jax_enable_preemption_service): a signal "
                "to one process stops only that one, and the others hang at the next "
                "collective"
            )

    def __enter__(self):
        # Several processes: SIGTERM stays with JAX's notifier, installed at start-up.
        signals = (signal.SIGINT,) if self._agreed else (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if self._agreed:
            os.kill(os.getpid(), signal.SIGTERM)  # tells JAX's notifier, hence every process

    def stop_at(self, step: int) -> bool:
        """Whether to checkpoint and stop after ``step`` (the number of steps done).

        Several processes: call at every step; True on all of them at the same step.
        """
        if not self._agreed:
            return self.requested is not None
        if not multihost_utils.reached_preemption_sync_point(step):
            return False
        if self.requested is None:
            self.requested = "a preemption notice (SIGTERM to one of the processes)"
        return True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
