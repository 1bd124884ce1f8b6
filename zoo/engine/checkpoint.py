"""Checkpoints: the only module that imports Orbax.

Layout: ``<workdir>/checkpoints/<step>/{state,config,data}``: the full train
state (params, optimizer states, EMA, other variables, step), the config as
JSON, and the data pipeline's position. Saves are asynchronous and keep the
newest ``keep`` steps. A latest checkpoint that fails to restore (corrupt,
half-written) is moved aside to ``checkpoints/corrupt-<step>`` with a warning,
never deleted, and the previous one is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Save and restore train states under ``workdir/checkpoints``."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, config: dict, data: dict, *, force=False) -> bool:
        """Start saving (asynchronously); returns whether a save was started."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config),
                data=ocp.args.JsonSave({**data, "fingerprint": fingerprint(state)}),
            ),
            force=force,
        )

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, dict] | None:
        """(state, config, data) of the newest readable checkpoint, or None.

        abstract_state: pytree of ``jax.ShapeDtypeStruct`` with shardings, so the
        arrays land where the current run (any device count) wants them.
        """
        want = fingerprint(abstract_state)
        for step in reversed(self.steps()):
            try:
                data = self._manager.restore(
                    step, args=ocp.args.Composite(data=ocp.args.JsonRestore())
                ).data
            except Exception as err:  # noqa: BLE001 - any failure means unreadable
                self._quarantine(step, err)
                continue
            if data.get("fingerprint") != want:
                # A readable checkpoint of another model: an error, never a silent mix
                # and never moved aside (it may be somebody's only copy).
                raise ValueError(
                    f"checkpoint {step} in {self.directory} holds a model of other shapes "
                    "than this config builds; use another --workdir or the matching config"
                )
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        config=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as err:  # noqa: BLE001
                self._quarantine(step, err)
                continue
            return restored.state, restored.config, data
        return None

    def _quarantine(self, step: int, err: Exception) -> None:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, f"corrupt-{step}")
        log.warning(
            "checkpoint at step %d could not be restored (%s: %s); moved to %s, "
            "falling back to the previous one",
            step,
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
            dst,
        )
        if jax.process_index() == 0 and os.path.exists(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.move(src, dst)
        self._manager.close()
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def fingerprint(state) -> str:
    """A digest of the state's tree structure, shapes and dtypes."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    text = ";".join(
        f"{jax.tree_util.keystr(path)}:{tuple(x.shape)}:{x.dtype}" for path, x in leaves
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
