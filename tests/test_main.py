"""Bad input gives a clear error before anything is built or compiled."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs.ddpm_digits import get_config
from zoo import main as zoo_main
from zoo.engine import parallel

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Fail the test if a bad config ever reaches the reference classifiers or the trainer."""

    def trainer(*args, **kwargs):
        raise AssertionError("a bad config reached the trainer")

    def sample_metrics(*args, **kwargs):
        raise AssertionError("a bad config reached the sample metrics (reference classifiers)")

    monkeypatch.setattr("zoo.engine.loop.Trainer", trainer)
    monkeypatch.setattr("zoo.evals.sample_metrics.sample_metrics", sample_metrics)


def test_unknown_model(tmp_path):
    c = get_config("tiny")
    c.model = "dpm"
    with pytest.raises(ValueError, match="unknown model 'dpm'.*ddpm"):
        zoo_main.run(c, str(tmp_path))


def test_unknown_dataset(tmp_path):
    c = get_config("tiny")
    c.data.name = "not_a_dataset_anywhere"
    with pytest.raises(ValueError, match="not_a_dataset_anywhere"):
        zoo_main.run(c, str(tmp_path))


def test_missing_key(tmp_path):
    c = get_config("tiny")
    del c.train["steps"]
    with pytest.raises(ValueError, match="train.steps"):
        zoo_main.run(c, str(tmp_path))


def test_image_size_the_unet_cannot_halve(tmp_path):
    c = get_config("tiny")
    c.data.image_size = 6
    c.unet.ch_mult = (1, 2, 2)
    with pytest.raises(ValueError, match="image size 6 must be divisible"):
        zoo_main.run(c, str(tmp_path))


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'huge' of ddpm_digits; known: tiny"):
        get_config("huge")


def _set(config, path: str, value):
    """Set ``path`` to ``value`` whatever its type (ConfigDict refuses float -> int)."""
    *parents, key = path.split(".")
    node = config
    for p in parents:
        node = node[p]
    if key in node:
        del node[key]
    node[key] = value


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("parallel", "pjit", r"parallel='pjit'; choose one of 'jit', 'pmap'"),
        ("train.on_nonfinite", "ignore", r"train.on_nonfinite='ignore'; choose one of 'stop'"),
        ("optim.name", "adamax", r"optim.name='adamax'; choose one of 'adam', 'adamw', 'sgd'"),
        ("optim.schedule", "step", r"optim.schedule='step'; choose one of 'constant', 'cosine'"),
        ("optim.microbatches", 0, r"optim.microbatches must be an integer >= 1, got 0"),
        ("optim.microbatches", 3, r"optim.microbatches=3 must divide data.batch_size=64"),
        ("optim.lr", 0.0, r"optim.lr must be a number > 0"),
        ("optim.warmup_steps", -1, r"optim.warmup_steps must be an integer >= 0"),
        ("optim.end_lr_factor", -0.5, r"optim.end_lr_factor must be a number >= 0"),
        ("train.steps", 2.5, r"train.steps must be an integer >= 1, got 2.5"),
        ("train.log_every", 2.5, r"train.log_every must be an integer >= 0 \(0: never\)"),
        ("train.eval_every", -1, r"train.eval_every must be an integer >= 0"),
        ("train.checkpoint_every", "3", r"train.checkpoint_every must be an integer"),
        ("train.sample_every", True, r"train.sample_every must be an integer"),
        ("train.keep_checkpoints", 0, r"train.keep_checkpoints must be an integer >= 1"),
        ("train.async_checkpoint", "yes", r"train.async_checkpoint must be True or False"),
        ("train.num_samples", 0, r"train.num_samples must be an integer >= 1"),
        ("eval.num_samples", -1, r"eval.num_samples must be an integer >= 0"),
        ("eval.batch_size", 0, r"eval.batch_size must be an integer >= 1"),
        ("ema_decay", 1.0, r"ema_decay must be a number >= 0.0 and < 1.0"),
        ("seed", "zero", r"seed must be an integer"),
    ],
)
def test_every_engine_field_is_checked_before_anything_is_built(tmp_path, path, value, message):
    c = get_config("tiny")
    _set(c, path, value)
    with pytest.raises(ValueError, match=message):
        zoo_main.run(c, str(tmp_path))


def test_exponential_schedule_needs_an_end_and_optim_d_is_checked(tmp_path):
    c = get_config("tiny")
    c.optim.update(dict(schedule="exponential", end_lr_factor=0.0))
    with pytest.raises(ValueError, match="optim.schedule='exponential' needs optim.end_lr_factor"):
        zoo_main.run(c, str(tmp_path))
    c = get_config("tiny")
    c.optim_d = {"name": "adamax"}  # a GAN's discriminator overrides
    with pytest.raises(ValueError, match="optim_d.name='adamax'"):
        zoo_main.run(c, str(tmp_path))


def test_workdir_of_another_model_is_refused_before_anything_is_built(tmp_path):
    other = importlib.import_module("configs.dcgan_digits").get_config("tiny")
    (tmp_path / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(ValueError, match=r"this workdir holds a dcgan run .*config.json.*ddpm"):
        zoo_main.run(get_config("tiny"), str(tmp_path))
    # The same model goes on (here to the sample metrics, stubbed to stop the test).
    (tmp_path / "config.json").write_text(json.dumps(get_config("tiny").to_dict()))
    with pytest.raises(AssertionError, match="sample metrics"):
        zoo_main.run(get_config("tiny"), str(tmp_path))


def test_batch_not_divisible_by_devices(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        parallel.check_batch_layout(12, 1, "jit")
    with pytest.raises(ValueError, match="microbatches"):
        parallel.check_batch_layout(16, 3, "jit")
    with pytest.raises(ValueError, match="parallel=.pjit"):
        parallel.check_batch_layout(16, 1, "pjit")
    parallel.check_batch_layout(16, 2, "pmap")


def _zoo_main(*args, workdir=None, module=("-m", "zoo.main")):
    argv = [sys.executable, *module, *args]
    if workdir is not None:
        argv.append(f"--workdir={workdir}")
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


TINY = "--config=configs/ddpm_digits.py:tiny"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=configs/nope.py"], "error: no config file 'configs/nope.py'"),
        (["--config=configs/ddpm_digits.py:huge"], "no variant 'huge'; its variants: tiny"),
        (
            [TINY, "--config.optim.lrr=0.1"],
            "error: --config.optim.lrr: the config has no key 'lrr'; did you mean 'lr'?",
        ),
        ([TINY, "--config.train.steps=abc"], "error: --config.train.steps=abc: expected an int"),
        ([TINY, "--config.model=dpm"], "error: unknown model 'dpm'"),
        ([TINY, "--config.data.name=not_a_dataset"], "error: unknown dataset 'not_a_dataset'"),
        (["--config=configs/nerf_llff.py:tiny", "--config.data.dir=/nowhere"], "does not exist"),
        ([], "error: --config and --workdir are required"),
    ],
)
def test_command_line_errors_are_plain_lines_with_status_2(tmp_path, args, message):
    out = _zoo_main(*args, workdir=tmp_path / "run" if args else None)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "run").exists()


def test_an_error_during_training_exits_1_without_a_traceback(tmp_path):
    # zoo.main's own entry point, with a train step that stops on a NaN.
    program = (
        "import sys; from absl import app; import zoo.main as m\n"
        "class Trainer:\n"
        "    def train(self):\n"
        "        raise FloatingPointError('the loss of player model became NaN/Inf at step 3')\n"
        "m.prepare = lambda config, workdir: Trainer()\n"
        "app.run(m.main, flags_parser=m.parse_flags)\n"
    )
    for extra, has_traceback in [((), False), (("--traceback",), True)]:
        out = _zoo_main(TINY, *extra, workdir=tmp_path / "run", module=("-c", program))
        assert out.returncode == 1, out.stderr
        assert "FloatingPointError: the loss of player model became NaN/Inf" in out.stderr
        assert ("Traceback" in out.stderr) == has_traceback


def test_list_prints_every_config_and_its_variants():
    out = _zoo_main("--list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert CONFIGS
    for path in CONFIGS:
        module = importlib.import_module(f"configs.{path.stem}")
        first = module.__doc__.strip().splitlines()[0]
        (i,) = [i for i, line in enumerate(lines) if line.startswith(f"configs/{path.name} ")]
        assert lines[i].split(None, 1)[1] == first
        assert module.VARIANTS, path  # every config has at least its tiny variant
        for k, (name, text) in enumerate(module.VARIANTS.items()):
            assert lines[i + 1 + k].split(None, 1) == [f":{name}", text]
