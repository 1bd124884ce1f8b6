"""Checkpoints: the only module that imports Orbax.

Layout: ``<workdir>/checkpoints/<step>/{state,config,data}``: the full train
state (params, optimizer states, EMA, other variables, step), the config as
JSON, and the data pipeline's position. Saves are asynchronous and keep the
newest ``keep`` steps. A latest checkpoint that fails to restore (corrupt,
half-written) is moved aside to ``checkpoints/corrupt-<step>`` with a warning,
never deleted, once an older one has restored; storage errors are raised as they
are, and a workdir whose checkpoints all fail stops the run.
"""

from __future__ import annotations

import errno
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
        self._closed = False

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
        """(state, config, data) of the newest readable checkpoint, or None if there is none.

        abstract_state: pytree of ``jax.ShapeDtypeStruct`` with shardings, so the
        arrays land where the current run (any device count) wants them.

        Newer checkpoints that are corrupt are moved aside only once an older one has
        restored. A storage error (permissions, a full or unreachable disk) is raised as
        it is, and so is a workdir whose checkpoints all fail: the run stops rather
        than start again from step 0 beside them.
        """
        want = fingerprint(abstract_state)
        steps = self.steps()
        unreadable: list[tuple[int, Exception]] = []
        for step in reversed(steps):
            try:
                data = self._manager.restore(
                    step, args=ocp.args.Composite(data=ocp.args.JsonRestore())
                ).data
            except Exception as err:  # noqa: BLE001 - sorted out by _unreadable
                unreadable.append((step, self._unreadable(step, err)))
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
                unreadable.append((step, self._unreadable(step, err)))
                continue
            for bad_step, err in unreadable:
                self._quarantine(bad_step, err)
            return restored.state, restored.config, data
        if unreadable:
            details = "; ".join(f"step {s}: {_first_line(e)}" for s, e in unreadable)
            raise CheckpointError(
                f"none of the checkpoints {steps} in {self.directory} can be restored "
                f"({details}). The run stops rather than start again from step 0; move "
                "the checkpoints folder aside to start over"
            )
        return None

    def _unreadable(self, step: int, err: Exception) -> Exception:
        """``err`` if it means the checkpoint's bytes are bad; re-raise a storage error."""
        if _is_storage_error(err):
            raise err
        return err

    def _quarantine(self, step: int, err: Exception) -> None:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, f"corrupt-{step}")
        log.warning(
            "checkpoint at step %d could not be restored (%s); moved to %s, "
            "falling back to an older one",
            step,
            _first_line(err),
            dst,
        )
        if jax.process_index() == 0 and os.path.exists(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.move(src, dst)
        self._manager.close()
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def close(self) -> None:
        """Finish pending saves and release the manager (safe to call twice)."""
        if self._closed:
            return
        self._manager.wait_until_finished()
        self._manager.close()
        self._closed = True


class CheckpointError(RuntimeError):
    """Checkpoints exist, and none of them can be restored."""


# errno values that say the storage failed, not the checkpoint's bytes.
_STORAGE_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.ENOTCONN,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
}
# How tensorstore (under Orbax) words the same failures in its ValueErrors.
_STORAGE_WORDS = ("PERMISSION_DENIED", "Permission denied", "UNAVAILABLE", "DEADLINE_EXCEEDED")


def _is_storage_error(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is a storage failure."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _STORAGE_ERRNOS:
            return True
        if any(word in str(err) for word in _STORAGE_WORDS):
            return True
        err = err.__cause__ or err.__context__
    return False


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def fingerprint(state) -> str:
    """A digest of the state's tree structure, shapes and dtypes."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    text = ";".join(
        f"{jax.tree_util.keystr(path)}:{tuple(x.shape)}:{x.dtype}" for path, x in leaves
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
