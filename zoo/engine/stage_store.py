"""This run's record of the trained stages it loaded, and its own copy of their weights.

``<workdir>/stages.json`` holds, per role, where the weights came from (the other
run's workdir, role, EMA or raw, step, model) and a sha256 of them;
``<workdir>/stages/<role>`` holds the weights (an Orbax checkpoint), so that a resumed
run does not depend on the other run keeping that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

SECTIONS = ("stages", "init")


def _key(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flat_paths(tree) -> dict:
    """``{"down/0/conv/kernel": leaf}``: paths that read the same whether a list level
    is a list or (as Orbax's metadata and NNX's pure dicts may give) a dict of indices."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key(k) for k in path): x for path, x in leaves}


def content_hash(params, rest) -> str:
    """sha256 of every array's path, dtype, shape and bytes: which weights a run used."""
    digest = hashlib.sha256()
    for part in (params, rest):
        for path, x in sorted(flat_paths(part).items()):
            if isinstance(x, jax.Array):
                x = x.addressable_data(0)  # replicated: any shard is the whole array
            x = np.asarray(x)
            digest.update(f"{path}:{x.dtype}:{x.shape};".encode())
            digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


class StageStore:
    """``<workdir>/stages.json`` (the records) and ``<workdir>/stages/<role>`` (weights)."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.record_path = os.path.join(self.workdir, "stages.json")

    def records(self) -> dict[str, dict]:
        """``{"stages": {role: record}, "init": {role: record}}`` as recorded, or empty."""
        if not os.path.exists(self.record_path):
            return {section: {} for section in SECTIONS}
        with open(self.record_path) as f:
            stored = json.load(f)
        return {section: stored.get(section, {}) for section in SECTIONS}

    def write_record(self, section: str, name: str, record: dict) -> None:
        """Add one record; atomic, so a killed run never leaves half a file."""
        records = self.records()
        records[section][name] = record
        if jax.process_index() != 0:
            return
        os.makedirs(self.workdir, exist_ok=True)
        tmp = f"{self.record_path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(records, f, indent=2)
        os.replace(tmp, self.record_path)

    def _path(self, name: str) -> str:
        return os.path.join(self.workdir, "stages", name)

    def save(self, name: str, params, rest) -> None:
        """Keep a copy of a frozen role's weights (written once, when the run starts)."""
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(self._path(name), {"params": params, "rest": rest}, force=True)
        checkpointer.wait_until_finished()
        checkpointer.close()

    def load(self, name: str, record: dict, params_like, rest_like, sharding):
        """The copy of a frozen role, checked against its recorded hash: ``(params, rest)``."""
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding),
            {"params": params_like, "rest": rest_like},
        )
        checkpointer = ocp.StandardCheckpointer()
        try:
            restored = checkpointer.restore(self._path(name), target)
        except Exception as err:  # noqa: BLE001 - any failure: the copy is unusable
            raise ValueError(
                f"this run's copy of stage {name!r} in {self._path(name)} cannot be read "
                f"({type(err).__name__}); the run was trained on {record['workdir']} step "
                f"{record['step']}: restore the copy, or start a new --workdir"
            ) from err
        finally:
            checkpointer.close()
        if content_hash(restored["params"], restored["rest"]) != record["hash"]:
            raise ValueError(
                f"this run's copy of stage {name!r} in {self._path(name)} does not match the "
                f"hash recorded in {self.record_path}: it was changed after the run started"
            )
        return restored["params"], restored["rest"]
