"""The training stream: this process's batches of steps [start, stop), loaded ahead by worker
processes.

    with make_stream(config.data, source, start=1000, stop=2000) as stream:
        for step, batch in zip(range(1000, 2000), stream):
            ...  # batch is source.batch(step), bit for bit

Exact resume. The stream holds no state worth saving: step s's batch is `source.batch(s)`, a
pure function of (seed, s) (`zoo.data.sources.TrainSource`), so a resumed run opens a new stream
at the checkpoint's step. `workers` changes how fast batches come, never which.

Processes, not threads. `workers` = W > 0 runs grain's `mp_prefetch`: W worker processes,
worker i loading steps start + i, start + i + W, ... one after another, and the main process
taking their batches round-robin, so in step order. Threads did not pay: the Python around
the decoders (opening a file, parsing its header, the per-example loop, numpy's small ops)
holds the GIL. Measured on an idle 2-core VM by `python experiments/bench/input_pipeline.py
--mp_workers 1,2,4 --json experiments/bench/results/cpu2_input.json`, when it timed both
(64x64 JPEGs, batch 256, images/s): a folder of JPEGs gave 4174 with no threads, 4220 / 3666
/ 3370 / 2841 with 1 / 2 / 4 / 8 threads, and 3289 / 5758 / 7768 with 1 / 2 / 4 processes;
tfds array_record 3182, then 3051 / 2420 / 2246 / 1679 with threads and 2003 / 3801 / 3962
with processes. The bench now times this stream by `data.workers` (processes).

The unit of work is a step: an element is `load(step)`, whole, so the stream equals the
sequential one by construction, for every dataset (a vectorised `load`, like `ring`'s float64
log/sin/cos or the NeRF rays' pose products, is not promised to give the same bits one
example at a time), and a task per step costs less Python than a task per example. The
price: up to 2 x `buffer` + 2 steps per worker are loaded ahead (queued in the worker and in
the main process, and one waiting on each side), e.g. 4 workers x 4 x 256 x 64 x 64 x 3
float32 = 200 MB, handed over in shared memory (`/dev/shm`: give a container enough of it).

What a worker costs. grain starts workers with `multiprocessing.get_context("spawn")`
(`ProcessPrefetchDatasetIterator` in grain's `process_prefetch.py`): fresh interpreters, never
a fork of this one (a forked copy of a process running JAX's threads can deadlock). So `load`
must pickle (`zoo.data.pipeline.StepLoader`: `make_source`'s arguments, not the source) and
a script that streams must guard its entry point with `if __name__ == "__main__"` (spawn
imports the main module again). A worker imports zoo.data and grain (grain imports JAX, but
nothing in a worker touches a device), opens its own copy of the source (an in-memory dataset
is held W + 1 times), then loads: the first batch comes seconds after the stream opens.

Shutdown. `close()` stops the workers and waits for them (each finishes the step it is on).
Once started up, they ignore SIGINT and SIGTERM, which a terminal's Ctrl-C sends to every
process of the foreground group, and SLURM's preemption to every process of the job: the main
process handles those (`zoo.engine.preemption`: save, then close the stream), and a worker
dying of one would fail the step it waits for before it could save. A worker exits by itself
when the main process ends without closing it (SIGKILL, the OOM killer), where grain's would
wait forever to hand over its next batch.

Sharding by process. Each process streams its own `TrainSource`, whose step s is the
contiguous slice [p * L, (p + 1) * L) of the global step s. grain's `ShardByJaxProcess` shards
the records instead (process p gets its own share of the dataset), so which examples make up
step s, and hence the numbers a run computes, would depend on the process count; with the
global step fixed first and then split, 1 host and N hosts train on the same batches (the
engine checks this: `tests/engine/test_multihost.py`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable

import numpy as np

from zoo.data.sources import Batch


class TrainStream:
    """Iterator over `load(step)` for step = start, start + 1, ..., stop - 1.

    Args:
      load: step -> batch, every field `[L, ...]`: `TrainSource.batch` or, with workers,
        something picklable that a fresh process can call (`zoo.data.pipeline.StepLoader`).
      start, stop: the steps to stream, 0 <= start <= stop.
      workers: processes loading steps ahead; 0 loads each step when it is asked for, in the
        caller's thread (no grain, no processes).
      buffer: finished steps each worker queues ahead (grain's `per_worker_buffer_size`).

    Close it (or use `with`) to stop the workers: `close()` returns once they have exited.
    """

    def __init__(
        self,
        load: Callable[[int], Batch],
        *,
        start: int,
        stop: int,
        workers: int = 0,
        buffer: int = 1,
    ):
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        if workers < 0:
            raise ValueError(f"workers={workers} must be >= 0")
        if buffer <= 0:
            raise ValueError(f"buffer={buffer} must be positive")
        self.load, self.workers = load, workers
        self.next_step, self.stop = start, stop
        self._closed = False
        workers = min(workers, stop - start)  # a worker without a step would only start up
        self._steps = iter(_in_processes(load, start, stop, workers, buffer)) if workers else None

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> Batch:
        """The next step's batch; a failed load raises its own error, message and type."""
        if self._closed:
            raise RuntimeError("the stream is closed")
        if self.next_step >= self.stop:
            raise StopIteration
        if self._steps is None:
            batch = self.load(self.next_step)
        else:  # grain's SharedMemoryArray, seen as the plain array it is (no copy)
            batch = {k: np.asarray(v) for k, v in next(self._steps).items()}
        self.next_step += 1
        return batch

    def close(self) -> None:
        """Stop the workers and wait until they have exited; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._steps is not None:
            self._steps.close()
            # grain's iterators keep each worker's last batch in a reference cycle: collect it
            # now, so its shared memory is unlinked now, not left for the exit to report.
            self._steps = None
            gc.collect()

    def __enter__(self) -> TrainStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _in_processes(load, start: int, stop: int, workers: int, buffer: int):
    """grain's iterable of `load(step)` for steps [start, stop), in order, from `workers`
    processes."""
    import grain  # ~2 s to import (it imports JAX): only when workers are asked for
    from absl import flags

    # grain reads its --grain_* absl flags when it starts workers; a caller that is not an
    # absl app (pytest, a notebook) has not parsed any: take their defaults.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    steps = grain.MapDataset.range(start, stop).map(load)
    # In a worker, one step after another: grain's default would add 16 threads per worker.
    one_by_one = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    processes = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer)
    return steps.to_iter_dataset(one_by_one).mp_prefetch(processes, worker_init_fn=_in_worker)


def _in_worker(index: int, count: int) -> None:
    """Run first in each worker process: leave the signals to the main process, and exit with
    it (see the module docstring, "Shutdown")."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()  # spawn's: join() waits on a pipe it holds open
    watch = threading.Thread(target=_exit_after, args=(parent,), name="exit-with-parent")
    watch.daemon = True
    watch.start()


def _exit_after(parent) -> None:
    parent.join()
    os._exit(1)
