"""One process of a (possibly multi-process) tiny run through ``zoo.main.main``.

    python tests/engine/run_multihost.py CONFIG WORKDIR REPORT_DIR --devices N [--config.x=y ...]

CONFIG is a config path with its variant (``configs/ddpm_digits.py:tiny``); the
remaining ``--config.*`` flags override it as on the ``zoo.main`` command line.
Several processes form one run when the caller sets JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID, exactly as for ``python -m zoo.main``:
this script calls the real ``zoo.main.main`` (distributed start-up, then
``run``). It writes, outside the workdir, ``REPORT_DIR/process_<i>.json`` (the
process layout, the dataset indices this process loaded per step and the
sample grids it wrote) and
``REPORT_DIR/process_<i>.npz`` (the final parameters, one array per path).
"""

import argparse
import json
import os
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("workdir")
    p.add_argument("report_dir")
    p.add_argument("--devices", type=int, default=1)
    args, overrides = p.parse_known_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

    import jax
    import numpy as np
    from absl import flags

    from zoo import main as zoo_main
    from zoo.data.sources import TrainSource
    from zoo.engine import writers

    # Recorders, installed before zoo.main imports the loop (which binds save_image_grid)
    # and without touching a device: the distributed start-up must come first.
    loaded: dict[int, list[int]] = {}
    grids: list[str] = []
    batch, save_grid = TrainSource.batch, writers.save_image_grid

    def recording_batch(self, step):
        loaded[int(step)] = self.indices(step).tolist()
        return batch(self, step)

    def recording_save_grid(path, *a, **k):
        grids.append(os.path.relpath(path, args.workdir))
        return save_grid(path, *a, **k)

    TrainSource.batch = recording_batch
    writers.save_image_grid = recording_save_grid
    finals = []
    run = zoo_main.run
    zoo_main.run = lambda config, workdir: finals.append(run(config, workdir))

    flags.FLAGS([sys.argv[0], f"--config={args.config}", f"--workdir={args.workdir}", *overrides])
    zoo_main.main([sys.argv[0]])

    (state,) = finals
    if zoo_main._CONFIG.value.parallel == "pmap":  # one copy per local device
        first = lambda x: np.asarray(x.addressable_data(0))[0]  # noqa: E731
        state = state._replace(params=jax.tree.map(first, state.params))
    steps_done = int(np.asarray(state.step.addressable_data(0)).reshape(-1)[0])
    paths = jax.tree_util.tree_flatten_with_path(state.params)[0]
    params = {jax.tree_util.keystr(k): np.asarray(jax.device_get(v)) for k, v in paths}
    os.makedirs(args.report_dir, exist_ok=True)
    name = os.path.join(args.report_dir, f"process_{jax.process_index()}")
    np.savez(name + ".npz", **params)
    report = dict(
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        devices=jax.device_count(),
        local_devices=jax.local_device_count(),
        distributed=jax.distributed.is_initialized(),
        pid=os.getpid(),
        step=steps_done,
        loaded=loaded,
        grids=grids,
    )
    with open(name + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
