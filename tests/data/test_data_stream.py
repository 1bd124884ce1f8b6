"""The train stream gives exactly `TrainSource.batch(step)`, step after step, from worker
processes too.

Checked against the sequential source itself (the specification: a pure function of
(seed, step)), for worker counts, start steps and process counts, and with the errors and
shutdown a training run relies on. Each stream with workers spawns fresh interpreters
(seconds): one worker count per test.
"""

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import ml_collections
import numpy as np
import pytest
from PIL import Image

from zoo.data import TrainStream, check_data_config, image_folder, make_source, make_stream
from zoo.data.pipeline import StepLoader

# The loads defined here run in spawned workers, which cannot import this file by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[2]
NUM_IMAGES = 12  # 11 train + 1 held out: 4-example steps 2 and 5 straddle two epochs


def write_folder(root):
    """Noise images (so a flip shows), PNG and JPEG, in two class subfolders."""
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.{'png' if i % 3 else 'jpg'}")
    return root


def folder_cfg(root, **kwargs) -> ml_collections.ConfigDict:
    base = dict(name="image_folder", path=str(root), image_size=8, random_flip=True)
    return ml_collections.ConfigDict({**base, **kwargs})


def assert_batches_equal(got, want, step):
    assert sorted(got) == sorted(want), step
    for key in want:
        assert type(got[key]) is np.ndarray, (step, key)  # not grain's shared-memory subclass
        assert got[key].dtype == want[key].dtype, (step, key)
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"step {step}, {key}")
        assert got[key].tobytes() == want[key].tobytes(), (step, key)  # bits, -0.0 too


def no_workers() -> bool:
    """Whether every worker process this one started has exited (and been reaped)."""
    return multiprocessing.active_children() == []


class SlowSteps:
    """A picklable `load`: sleeps `seconds`, leaving a file in `folder` per step started and
    per step finished, so the test sees what the workers did."""

    def __init__(self, folder: Path, seconds: float):
        self.folder, self.seconds = folder, seconds

    def __call__(self, step: int) -> dict:
        (self.folder / f"started-{step}").touch()
        time.sleep(self.seconds)
        (self.folder / f"finished-{step}").touch()
        return {"x": np.full((2,), step)}

    def steps(self, what: str) -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in self.folder.glob(f"{what}-*"))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_is_the_source_step_by_step_from_any_start_across_epochs(tmp_path, workers):
    """From step 1 (a resumed run), with flips. With 2 workers, worker 0 loads steps 1, 3,
    5, 7 and worker 1 steps 2, 4, 6: the stream still goes in step order."""
    config = folder_cfg(write_folder(tmp_path), workers=workers)
    reference = make_source(config, seed=5, examples_per_step=4)
    assert reference.num_examples == 11
    # A new source for the stream, as a restarted process has: nothing carried over but the
    # step, no permutation cached.
    source = make_source(config, seed=5, examples_per_step=4)
    with make_stream(config, source, start=1, stop=8) as stream:
        batches = list(stream)
    assert no_workers()
    assert len(batches) == 7  # steps 1..7: epochs 0, 1 and 2, steps 2 and 5 straddle two
    for step, batch in enumerate(batches, start=1):
        assert_batches_equal(batch, reference.batch(step), step)
    unflipped = make_source(folder_cfg(tmp_path, random_flip=False), seed=5, examples_per_step=4)
    assert any(  # the flips are really exercised
        not np.array_equal(b["image"], unflipped.batch(s)["image"])
        for s, b in enumerate(batches, start=1)
    )


def test_two_processes_stream_their_slices_of_the_single_process_steps(tmp_path):
    """Process 1 streams from a worker (which opens its own source with that index)."""
    config = folder_cfg(write_folder(tmp_path))
    single = make_source(config, seed=2, examples_per_step=4)
    shares = []
    for index, workers in enumerate([0, 1]):
        source = make_source(
            config, seed=2, examples_per_step=4, process_index=index, process_count=2
        )
        with make_stream(folder_cfg(tmp_path, workers=workers), source, start=1, stop=6) as s:
            batches = list(s)
        for step, batch in zip(range(1, 6), batches, strict=True):
            assert_batches_equal(batch, source.batch(step), step)
        shares.append(batches)
    for step, (first, second) in zip(range(1, 6), zip(*shares, strict=True), strict=True):
        glued = {k: np.concatenate([first[k], second[k]]) for k in first}
        assert_batches_equal(glued, single.batch(step), step)


def test_a_vectorised_dataset_streams_the_same_bits():
    """`ring` loads a whole step with float64 log/sin/cos: the stream must not re-slice it."""
    config = ml_collections.ConfigDict(dict(name="ring", image_size=8, num_train=50, workers=1))
    source = make_source(config, seed=0, examples_per_step=16)
    with make_stream(config, source, start=2, stop=6) as stream:
        for step, batch in zip(range(2, 6), stream, strict=True):
            assert_batches_equal(batch, source.batch(step), step)


@pytest.mark.parametrize("value", [-1, "2", 1.5, True, None])
def test_a_bad_workers_value_fails_the_config_check(value):
    config = ml_collections.ConfigDict(dict(name="ring", image_size=8, workers=value))
    with pytest.raises(ValueError, match=r"data.workers must be a non-negative int, got"):
        check_data_config(config)


def test_an_undecodable_file_is_named_before_training(tmp_path):
    """As without workers: every bad file is listed when the config is checked."""
    root = write_folder(tmp_path)
    jpeg = root / "b" / "00.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-2])  # only the end-of-image marker lost
    with pytest.raises(ValueError, match="1 of 12 image files cannot be decoded") as error:
        check_data_config(folder_cfg(root, workers=3))
    assert str(jpeg) in str(error.value)


def test_a_worker_opens_the_checked_source_without_decoding_any_file(tmp_path, monkeypatch):
    """`StepLoader` pickles as plain data; unpickled in a process that knows nothing (no
    verdicts), it opens the same source, skipped files and all, without decoding a file."""
    root = write_folder(tmp_path)
    bad = root / "a" / "01.png"
    bad.write_bytes(b"not an image")
    config = folder_cfg(root, skip_bad_images=True, workers=1)
    source = make_source(config, seed=3, examples_per_step=4)
    assert source.num_examples == 10  # 11 usable files, one held out
    loader = StepLoader(config, source)
    assert list(loader.checked["bad"]) == [str(bad)]
    assert len(pickle.dumps(loader)) < 2000
    monkeypatch.setattr(image_folder, "_VERDICTS", {})  # a fresh process...

    def decode(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(image_folder, "_decode_error", decode)
    worker = pickle.loads(pickle.dumps(loader))
    for step in range(4):
        assert_batches_equal(worker(step), source.batch(step), step)
    # A file added since the run started changes the split: the worker says so.
    Image.new("RGB", (10, 12)).save(root / "a" / "99.png")
    with pytest.raises(RuntimeError, match="opened 11 training examples, the main process 10"):
        pickle.loads(pickle.dumps(loader))(0)


def test_a_worker_error_that_would_not_survive_pickling_arrives_as_its_message(tmp_path):
    """grain hands a worker's error over pickled: an exception whose constructor takes other
    arguments than its `args` would arrive as an unrelated TypeError, so it is replaced."""

    class NeedsTwo(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a} and {b}")

    def broken(step):
        raise NeedsTwo("the disk", "the cable")

    config = folder_cfg(write_folder(tmp_path))
    loader = StepLoader(config, make_source(config, seed=0, examples_per_step=4))
    loader(0)
    loader._source.batch = broken
    with pytest.raises(RuntimeError, match="^NeedsTwo: the disk and the cable") as error:
        loader(1)
    assert "train step 1" in str(error.value)
    assert pickle.loads(pickle.dumps(error.value)).args == error.value.args


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_broken_mid_run_raises_its_own_error_from_a_worker(tmp_path, workers):
    """A file that breaks after the check: the stream gives the steps before the one that
    reads it, then raises the error the sequential source raises, message and all."""
    root = write_folder(tmp_path)
    config = folder_cfg(root, eval_fraction=0.0, workers=workers)  # every file trains
    source = make_source(config, seed=0, examples_per_step=4)
    paths, _, _ = image_folder.list_images(str(root))
    victim = paths[source.indices(1)[0]]  # read at step 1, not at step 0 (same epoch)
    with open(victim, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(ValueError) as sequential:
        source.batch(1)
    assert str(sequential.value).startswith(f"cannot read image {victim!r}")
    stream = make_stream(config, source, start=0, stop=3)
    assert_batches_equal(next(stream), source.batch(0), 0)
    with pytest.raises(ValueError) as streamed:
        next(stream)
    assert str(streamed.value) == str(sequential.value)
    if workers:
        assert "loading train step 1 in a data.workers process" in streamed.value.__notes__[0]
    stream.close()
    assert no_workers()


@pytest.mark.slow  # spawns and signals workers: 4 s on 2 cores
def test_close_stops_the_workers_which_leave_signals_to_the_main_process(tmp_path):
    """Ctrl-C and a scheduler's SIGTERM reach every process of the job: the workers go on
    (the main process saves, then closes the stream). Closing mid-stream (an exception or
    preemption in the loop) waits for the steps being loaded and starts no other."""
    load = SlowSteps(tmp_path, seconds=0.05)
    stream = TrainStream(load, start=0, stop=100, workers=2)
    # Steps 0 and 1 come from workers 0 and 1: both have started up (set their signals).
    assert [int(next(stream)["x"][0]) for _ in range(2)] == [0, 1]
    workers = multiprocessing.active_children()
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)
        os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert all(worker.is_alive() for worker in workers)
    assert [int(next(stream)["x"][0]) for _ in range(3)] == [2, 3, 4]
    stream.close()
    assert no_workers()
    done = load.steps("finished")
    # Each worker loads up to 2 x buffer + 2 = 4 steps ahead, so steps 0..12 at most.
    assert load.steps("started") == done and len(done) <= 13
    time.sleep(0.2)
    assert load.steps("started") == done  # nothing started after close
    stream.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        next(stream)


@pytest.mark.slow  # a main process with workers, killed: 4 s on 2 cores
def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    """SIGKILL (or the OOM killer) gives the main process no chance to close the stream."""
    script = (
        "import multiprocessing, time, ml_collections\n"
        "from zoo.data import make_source, make_stream\n"
        "c = ml_collections.ConfigDict(dict(name='ring', image_size=8, num_train=50, workers=1))\n"
        "stream = make_stream(c, make_source(c, seed=0, examples_per_step=4), start=0, stop=99)\n"
        "next(stream)\n"
        "print(multiprocessing.active_children()[0].pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    main = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        worker = int(main.stdout.readline())
    finally:
        main.kill()
        main.wait()
    deadline = time.monotonic() + 10
    while not exited(worker):
        assert time.monotonic() < deadline, "the worker outlived the main process"
        time.sleep(0.05)


def exited(pid: int) -> bool:
    """Gone, or a zombie (exited, not yet reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_bad_stream_arguments():
    def load(step):
        return {"x": np.zeros(1)}

    with pytest.raises(ValueError, match="workers=-1"):
        TrainStream(load, start=0, stop=1, workers=-1)
    with pytest.raises(ValueError, match="start <= stop"):
        TrainStream(load, start=3, stop=2)
    with pytest.raises(ValueError, match="buffer=0"):
        TrainStream(load, start=0, stop=1, workers=1, buffer=0)
