"""The train loop: state in, steps, hooks (log, sample, eval, checkpoint, preemption).

Reads top to bottom: validate, build data and state (restored from the
workdir when a checkpoint is there), compile, then run steps with a progress
bar. Everything here is family-agnostic; a family only provides an objective.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from zoo import data as zdata
from zoo.engine import parallel, stages
from zoo.engine.checkpoint import Checkpointer
from zoo.engine.config import config_changes, mesh_sizes
from zoo.engine.objective import Objective
from zoo.engine.preemption import Preemption
from zoo.engine.state import Graphs, count_params, init_state, split_frozen, split_modules
from zoo.engine.step import Models, build_train_step
from zoo.engine.writers import MetricWriter, image_grid, save_image_grid

log = logging.getLogger(__name__)

# Extra evaluations on generated samples: {"image": [N, H, W, C] in [-1, 1], and any
# conditioning fields the objective's sample returned} -> metrics.
SampleEval = Callable[[dict[str, np.ndarray]], dict[str, float]]


def numeric(batch: dict) -> dict[str, np.ndarray]:
    """The fields that go to devices: numbers, not strings (captions stay on the host)."""
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    return {k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}


class Trainer:
    """Owns the compiled step, the state and the hooks of one run."""

    def __init__(self, config, workdir: str, objective: Objective, sample_evals=()):
        objective.check()
        self.config, self.workdir, self.objective = config, workdir, objective
        self.sample_evals = tuple(sample_evals)
        train = config.train
        self.total_steps = int(train.steps)
        self.microbatches = int(config.optim.get("microbatches", 1))
        self.substeps = objective.substeps
        global_batch = int(config.data.batch_size)
        parallel.check_batch_layout(global_batch, self.microbatches, config.parallel)
        self.runner = parallel.Runner(
            config.parallel,
            **mesh_sizes(config),
            min_size=int(config.get("mesh", {}).get("fsdp_min_size", parallel.FSDP_MIN_SIZE)),
        )
        self.source = zdata.make_source(
            config.data,
            seed=int(config.seed),
            examples_per_step=global_batch * self.substeps,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        self.checkpointer = Checkpointer(
            workdir,
            keep=int(train.get("keep_checkpoints", 3)),
            async_save=bool(train.get("async_checkpoint", True)),
        )
        batch_axis = parallel.AXIS if config.parallel == "pmap" else None
        self.graphs, params, rest = split_modules(objective.modules, batch_axis=batch_axis)
        self.graphs, frozen = split_frozen(objective.frozen, self.graphs)
        self.num_params = {role: count_params(p) for role, p in params.items()}
        # Trained stages: loaded (and their shapes checked) before anything compiles.
        resuming = bool(self.checkpointer.steps())
        replicated = self.runner.replicated
        frozen = stages.frozen_variables(
            config, workdir, frozen, resuming=resuming, sharding=replicated
        )
        if not resuming:
            params, rest = stages.initial_variables(config, workdir, params, rest, replicated)
        # The global copy serves sampling and evals; the step gets the mode's layout.
        self.frozen = jax.device_put(frozen, replicated)
        self._step_frozen = self.runner.replicate(self.frozen)
        # Variables go in as arguments: closed over, they would be baked into the
        # init program as constants (slow to compile for large models).
        self._init = functools.partial(init_state, objective)
        self._variables = (params, rest)
        self.abstract_state = self.runner.abstract_state(
            jax.eval_shape(self._init, *self._variables)
        )
        step_fn = build_train_step(
            objective,
            self.graphs,
            seed=int(config.seed),
            on_nonfinite=train.get("on_nonfinite", "stop"),
            axis_name=batch_axis,
            ema_warmup=bool(config.get("ema_warmup", False)),
        )
        self.run_step = self.runner.compile_step(step_fn, self.abstract_state)
        self._sampler = self._evaluator = self._eval_source = self._figures = None

    # -- state -------------------------------------------------------------
    def restore_or_init(self):
        """Resume from the workdir's newest readable checkpoint, else initialise."""
        restored = self.checkpointer.restore_latest(self.abstract_state)
        if restored is None:
            return self.runner.init_state(self._init, self.abstract_state, *self._variables), 0
        state, saved_config, data_state = restored
        step = int(data_state["step"])
        log.info("resumed from step %d in %s", step, self.checkpointer.directory)
        changes = config_changes(saved_config, self.config.to_dict())
        if changes:
            log.warning("the config differs from the checkpoint's:\n  %s", "\n  ".join(changes))
        return self.runner.replicate(state), step

    def save(self, state, step: int) -> None:
        self._check_finite(state)  # never checkpoint a state frozen by a NaN
        self.checkpointer.save(
            step, self.runner.unreplicate(state), self.config.to_dict(), self.source.state(step)
        )

    # -- batches -----------------------------------------------------------
    @staticmethod
    def lay_out(
        batch: dict, substeps: int, microbatches: int, process_index: int
    ) -> dict[str, np.ndarray]:
        """A process's share of one step, ``[L, ...]`` per field, as ``[S, A, L / (S * A), ...]``.

        Example j of the step (``source.batch`` gives process p the contiguous
        j in [p * L, (p + 1) * L)) goes to b = j // (S * A), s = j // A % S,
        a = j % A: each process's share is then a contiguous slice of B in every
        substep and microbatch, so the global batch that
        ``make_array_from_process_local_data`` glues along B is the same for any
        number of processes. Adds ``example_id`` (int32, the global j); drops strings.
        """
        local = numeric(batch)
        n = len(next(iter(local.values())))
        offset = process_index * n
        local["example_id"] = np.arange(offset, offset + n, dtype=np.int32)
        s, a = substeps, microbatches

        def layout(v):  # [L, ...] -> [L / (S * A), S, A, ...] -> [S, A, L / (S * A), ...]
            v = np.asarray(v)
            return np.moveaxis(v.reshape(n // (s * a), s, a, *v.shape[1:]), 0, 2)

        return {k: layout(v) for k, v in local.items()}

    def host_batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's examples of ``step`` laid out as [S, A, B_local, ...] (`lay_out`)."""
        return Trainer.lay_out(
            self.source.batch(step), self.substeps, self.microbatches, jax.process_index()
        )

    # -- hooks ---------------------------------------------------------------
    def eval_params(self, state):
        """``(params, rest, frozen)`` for sampling and evals: the EMA copy where a role
        keeps one, and the trained stages (the arguments of :class:`Models`)."""
        state = self.runner.unreplicate(state)
        return {**state.params, **state.ema}, state.rest, self.frozen

    def samples(self, state, n: int, seed_offset: int = 0) -> dict[str, np.ndarray]:
        """``n`` samples from the EMA params: ``{"image": [n, H, W, C], ...}`` (see Objective)."""
        if self._sampler is None:
            sample = self.objective.sample
            graphs: Graphs = self.graphs
            # Replicated outputs: every process can read them, whatever the state's sharding.
            self._sampler = jax.jit(
                lambda p, r, f, key, n: sample(Models(graphs, p, r, f), key, n),
                static_argnums=4,
                out_shardings=self.runner.replicated,
            )
        key = jax.random.fold_in(jax.random.key(int(self.config.seed) + 1), seed_offset)
        out = jax.device_get(self._sampler(*self.eval_params(state), key, n))
        out = out if isinstance(out, dict) else {"image": out}
        return {k: np.asarray(v) for k, v in out.items()}

    def figures(self, state) -> dict[str, np.ndarray]:
        """The objective's extra pictures: name -> ``[R, C, H, W, ch]`` in [-1, 1]."""
        if not self.objective.figures:
            return {}
        if self._figures is None:
            graphs: Graphs = self.graphs
            self._figures = {
                name: jax.jit(
                    lambda p, r, f, key, fig=fn: fig(Models(graphs, p, r, f), key),
                    out_shardings=self.runner.replicated,
                )
                for name, fn in self.objective.figures.items()
            }
        variables = self.eval_params(state)
        key = jax.random.key(int(self.config.seed) + 3)
        return {
            name: np.asarray(jax.device_get(fn(*variables, key)))
            for name, fn in self._figures.items()
        }

    def write_samples(self, state, step: int) -> None:
        if self.objective.sample is None and not self.objective.figures:
            return
        pictures = {}
        if self.objective.sample is not None:
            images = self.samples(state, int(self.config.train.num_samples)).get("image")
            if images is not None:
                pictures["samples"] = (images, None)
        for name, table in self.figures(state).items():
            rows, cols = table.shape[:2]
            pictures[name] = (table.reshape(rows * cols, *table.shape[2:]), cols)
        if jax.process_index() == 0:
            for name, (images, ncol) in pictures.items():
                prefix = "" if name == "samples" else f"{name}_"
                path = os.path.join(self.workdir, "samples", f"{prefix}step_{step:07d}.png")
                save_image_grid(path, images, ncol=ncol)
                self.writer.images(step, name, image_grid(images, ncol=ncol))

    def evaluate(self, state, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.objective.evaluate is not None:
            metrics.update(self._held_out_metrics(state))
        if self.sample_evals and self.objective.sample is not None:
            samples = self.samples(state, int(self.config.eval.num_samples), seed_offset=step + 1)
            for fn in self.sample_evals:
                metrics.update(fn(samples))
        if metrics:
            self.writer.scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
        return metrics

    def _held_out_metrics(self, state) -> dict[str, float]:
        if self._evaluator is None:
            evaluate, graphs = self.objective.evaluate, self.graphs
            self._evaluator = jax.jit(
                lambda p, r, f, b, key: evaluate(Models(graphs, p, r, f), b, key),
                out_shardings=self.runner.replicated,
            )
            self._eval_source = zdata.make_eval_source(self.config.data)
        variables = self.eval_params(state)
        cfg = self.config.eval
        batch_size = int(cfg.batch_size) - int(cfg.batch_size) % jax.device_count()
        totals: dict[str, float] = {}
        seen = 0
        key = jax.random.key(int(self.config.seed) + 2)
        batches = self._eval_source.batches(batch_size, int(cfg.num_examples) or None)
        for i, batch in enumerate(batches):
            batch = numeric(batch)
            n = len(next(iter(batch.values())))
            if n % jax.device_count():
                break  # a ragged last batch does not shard; skip it
            placed = self.runner.put_examples(batch)
            out = jax.device_get(self._evaluator(*variables, placed, jax.random.fold_in(key, i)))
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v) * n
            seen += n
        return {k: v / max(seen, 1) for k, v in totals.items()}

    # -- the loop ------------------------------------------------------------
    def train(self) -> Any:
        cfg = self.config.train
        state, start = self.restore_or_init()
        self.writer = MetricWriter(
            self.workdir, enabled=jax.process_index() == 0, start_step=start + 1 if start else None
        )
        if jax.process_index() == 0:
            os.makedirs(self.workdir, exist_ok=True)
            with open(os.path.join(self.workdir, "config.json"), "w") as f:
                json.dump(self.config.to_dict(), f, indent=2, default=str)
        log.info(
            "parameters per role: %s; devices: %d (%s)",
            self.num_params,
            jax.device_count(),
            self.config.parallel,
        )
        every = {
            k: int(cfg.get(k, 0))
            for k in ("log_every", "sample_every", "eval_every", "checkpoint_every")
        }
        pending: list[dict] = []
        # steps/s of the steps since the last log: the time from last_log until their metrics
        # are on the host (so the device has finished them), less the time spent on
        # checkpoints, samples and evals in between (busy).
        last_log, busy = time.perf_counter(), 0.0
        steps_since = 0
        bar = tqdm(
            total=self.total_steps,
            initial=start,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=jax.process_index() != 0,
        )
        # data.workers processes load batches ahead, in step order (zoo.data.stream); a
        # thread lays out and puts the next step's batch on the devices while this one runs.
        stream = zdata.make_stream(
            self.config.data, self.source, start=start, stop=self.total_steps
        )
        prefetch = ThreadPoolExecutor(max_workers=1)
        shape = (self.substeps, self.microbatches, jax.process_index())
        load = lambda: self.runner.put_batch(self.lay_out(next(stream), *shape))  # noqa: E731
        future = prefetch.submit(load) if start < self.total_steps else None
        step = start
        try:
            with Preemption() as preempt:
                while step < self.total_steps:
                    batch = future.result()
                    if step + 1 < self.total_steps:
                        future = prefetch.submit(load)
                    active = tuple(step % p.every == 0 for p in self.objective.players)
                    state, metrics = self.run_step(state, batch, active, self._step_frozen)
                    step += 1
                    steps_since += 1
                    pending.append(metrics)
                    bar.update(1)
                    last = step == self.total_steps
                    if last or (every["log_every"] and step % every["log_every"] == 0):
                        summary = self._log(state, step, pending, steps_since, last_log + busy)
                        # One loss per player: "model", or "discriminator" and "generator".
                        losses = {
                            k.split("/")[0]: f"{v:.4g}"
                            for k, v in summary.items()
                            if k.endswith("/loss")
                        }
                        bar.set_postfix(losses)
                        pending, steps_since, last_log, busy = [], 0, time.perf_counter(), 0.0
                    start_extras = time.perf_counter()
                    # The checkpoint first: a sample grid or an eval that fails must not
                    # cost the step's checkpoint.
                    if last or (
                        every["checkpoint_every"] and step % every["checkpoint_every"] == 0
                    ):
                        self.save(state, step)
                    if preempt.stop_at(step):
                        self.save(state, step)
                        self.checkpointer.wait()
                        bar.write(
                            f"{preempt.requested} received: saved a checkpoint at step {step}",
                            file=sys.stderr,
                        )
                        break
                    if every["sample_every"] and (step % every["sample_every"] == 0 or last):
                        self.write_samples(state, step)
                    if every["eval_every"] and (step % every["eval_every"] == 0 or last):
                        metrics = self.evaluate(state, step)
                        if jax.process_index() == 0:
                            summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                            bar.write(f"step {step}: {summary}", file=sys.stderr)
                    busy += time.perf_counter() - start_extras
        except BaseException as err:
            self._report_stop(err, step)
            raise
        finally:
            # Finish (never abandon) a checkpoint being written, whatever happened.
            bar.close()
            prefetch.shutdown(wait=True, cancel_futures=True)
            stream.close()  # after the prefetch thread: it may be waiting on the stream
            self.checkpointer.close()
            self.writer.close()
        return state

    def _report_stop(self, err: BaseException, step: int) -> None:
        """Say where a rerun of the same command resumes, once pending saves are on disk."""
        self.checkpointer.wait()
        saved = self.checkpointer.steps()
        resume = f"step {saved[-1]}" if saved else "step 0 (no checkpoint yet)"
        log.error(
            "the run stopped after step %d (%s: %s); checkpoints on disk: %s; running the "
            "same command again resumes from %s",
            step,
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
            saved,
            resume,
        )

    def _log(self, state, step: int, pending: list[dict], steps: int, since: float) -> dict:
        """Writes the mean of the ``pending`` metrics of the last ``steps`` steps, and their
        rate: ``steps`` over the time from ``since`` until their metrics reached the host."""
        host = [self.runner.metrics_to_host(m) for m in pending]  # waits for the device
        elapsed = time.perf_counter() - since
        keys = sorted({k for m in host for k in m})
        summary = {k: float(np.mean([m[k] for m in host if k in m])) for k in keys}
        summary["steps_per_sec"] = steps / max(elapsed, 1e-9)
        self.writer.scalars(step, summary)  # first, so the log shows the NaN
        self._check_finite(state)
        return summary

    def _check_finite(self, state) -> None:
        """Stop (in ``on_nonfinite="stop"`` mode) once a player's update was non-finite."""
        if self.config.train.get("on_nonfinite", "stop") != "stop":
            return
        nonfinite = np.asarray(jax.device_get(self.runner.unreplicate(state).nonfinite))
        if (nonfinite >= 0).any():
            i = int(np.argmax(nonfinite >= 0))
            player = self.objective.players[i].name
            self.checkpointer.wait()
            saved = self.checkpointer.steps()
            raise FloatingPointError(
                f"the loss or gradient of player {player!r} became NaN/Inf at step "
                f"{int(nonfinite[i])}; that update was not applied and the run stopped. "
                f"Checkpoints on disk: {saved}. Lower optim.lr, or set "
                f"train.on_nonfinite='skip' to drop such updates and go on."
            )
