"""Every config file builds, and the tfds-backed CIFAR-10 config trains on tfds mock data."""

import importlib
import json
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from configs import ddpm_cifar10, vqgan_shapes
from zoo import registry
from zoo.config_files import config_files, config_module, read_config_file
from zoo.engine.config import config_changes, load_run_config, set_fields
from zoo.main import run

# Their default variants are the papers' models (tens of millions of parameters): the tests
# build their tiny variants, and the model tests count the paper-size parameters abstractly.
PAPER_SCALE = {
    "ddpm_cifar10", "dcgan_lsun", "sd_v1", "stylegan2_ffhq", "styleswin_ffhq", "vqgan_imagenet",
}  # fmt: skip
CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


# Runs of the stage-1 configs that stage-2 configs load (their STAGES), trained on first use.
_STAGE_RUNS = {}


def stage_runs(module, variant, tmp_path_factory) -> dict[str, str]:
    """role -> workdir of a one-step run of the config file ``module.STAGES`` names for it."""
    workdirs = {}
    for role, name in getattr(module, "STAGES", {}).items():
        if (name, variant) not in _STAGE_RUNS:
            stage_module = __import__(f"configs.{name}", fromlist=["get_config"])
            config = stage_module.get_config(variant)
            # a stage that loads stages itself (unCLIP's prior loads CLIP): those first
            for inner, inner_workdir in stage_runs(stage_module, variant, tmp_path_factory).items():
                config.stages[inner].workdir = inner_workdir
            config.train.update(
                dict(steps=1, log_every=1, sample_every=0, eval_every=0, checkpoint_every=1)
            )
            workdir = tmp_path_factory.mktemp(f"{name}_{variant}")
            run(config, str(workdir))
            _STAGE_RUNS[name, variant] = str(workdir)
        workdirs[role] = _STAGE_RUNS[name, variant]
    return workdirs


def build(module, variant, tmp_path_factory):
    config = module.get_config(variant)
    for role, workdir in stage_runs(module, variant, tmp_path_factory).items():
        config.stages[role].workdir = workdir
    registry.build_objective(config).check()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files_build_their_objective(name, tmp_path_factory):
    module = __import__(f"configs.{name}", fromlist=["get_config"])
    assert "tiny" in module.VARIANTS
    assert f"python -m zoo.main --config=configs/{name}.py" in module.__doc__
    for variant in (None, *module.VARIANTS):  # every declared variant is accepted
        module.get_config(variant)
    # Paper models take long to init; other variants (:small) are sized like these. A
    # stage-2 config's default needs a default stage-1 run: the slow tier builds those.
    build(module, "tiny", tmp_path_factory)
    if name not in PAPER_SCALE and not hasattr(module, "STAGES"):
        build(module, None, tmp_path_factory)
    # VARIANTS is the one list: the error for any other variant names it.
    with pytest.raises(ValueError, match=f"unknown variant 'huge' of {name}; known: "):
        module.get_config("huge")
    # --list reads the file without importing it, and finds what the module holds.
    listed = read_config_file(Path(module.__file__))
    assert listed.variants == module.VARIANTS
    assert listed.description == module.__doc__.strip().splitlines()[0]
    assert all(text and "\n" not in text for text in module.VARIANTS.values())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in CONFIGS if hasattr(importlib.import_module(f"configs.{n}"), "STAGES")]
)
def test_stage_two_config_defaults_build_on_default_stage_one_runs(name, tmp_path_factory):
    build(__import__(f"configs.{name}", fromlist=["get_config"]), None, tmp_path_factory)


def test_config_files_lists_every_file():
    listed = config_files()
    assert [Path(f.path).stem for f in listed] == CONFIGS
    assert all(f.description for f in listed)


def test_config_module_imports_a_config_file_by_name_from_any_directory(tmp_path, monkeypatch):
    """A config that builds on another (glide_inpaint_shapes on glide_shapes) imports it by
    path: configs/ is not a package, so ``from configs import ...`` fails outside the root."""
    monkeypatch.chdir(tmp_path)
    glide = config_module("glide_shapes").get_config("tiny")
    inpaint = config_module("glide_inpaint_shapes").get_config("tiny")
    assert inpaint.model == "inpaint" and glide.model == "ddpm"
    assert inpaint.unet.to_dict() == glide.unet.to_dict()
    with pytest.raises(ValueError, match="no config file .*nowhere.py"):
        config_module("nowhere")


def test_config_changes_lists_changed_added_and_removed_keys():
    from configs import ddpm_digits

    saved = ddpm_digits.get_config("tiny").to_dict()
    current = ddpm_digits.get_config("tiny")
    assert config_changes(saved, current.to_dict()) == []
    # Tuples and lists compare equal (the saved side is JSON).
    assert config_changes(json.loads(json.dumps(saved)), current.to_dict()) == []
    current.train.steps = 8
    current.train.log_every = 4
    current.data.workers = 3  # input threads: same batches, so not among the numbers
    current.optim.foo = 0.1
    del current.data["random_flip"]
    assert config_changes(saved, current.to_dict()) == [
        "data.random_flip: removed (was False)",
        "data.workers: 0 -> 3",
        "optim.foo: added (0.1)",
        "train.log_every: 2 -> 4",
        "train.steps: 6 -> 8",
        "changes the run's numbers: data.random_flip, optim.foo, train.steps (the learning "
        "rate's decay (optim.schedule='cosine') spans train.steps)",
    ]


def test_config_changes_note_says_which_fields_change_the_numbers():
    saved = {"train": {"steps": 6, "eval_every": 3}, "optim": {"schedule": "constant"}}
    longer = {"train": {"steps": 8, "eval_every": 2}, "optim": {"schedule": "constant"}}
    # A constant rate, or a decay of fixed length: more steps only run longer.
    assert config_changes(saved, longer) == ["train.eval_every: 3 -> 2", "train.steps: 6 -> 8"]
    saved["optim"] = longer["optim"] = {"schedule": "cosine", "decay_steps": 100}
    assert config_changes(saved, longer)[-1] == "train.steps: 6 -> 8"
    saved["optim"] = longer["optim"] = {"schedule": "exponential", "decay_steps": 0}
    assert config_changes(saved, longer)[-1] == (
        "changes the run's numbers: train.steps (the learning rate's decay "
        "(optim.schedule='exponential') spans train.steps)"
    )
    # A GAN's discriminator decays over train.steps with optim's schedule unless it sets its own.
    gan_saved = {"train": {"steps": 6}, "optim": {"schedule": "constant"}, "optim_d": {"lr": 1}}
    gan_now = {"train": {"steps": 8}, "optim": {"schedule": "constant"}, "optim_d": {"lr": 2}}
    assert config_changes(gan_saved, gan_now)[-1] == "changes the run's numbers: optim_d.lr"
    gan_now["optim_d"]["schedule"] = gan_saved["optim_d"]["schedule"] = "linear"
    assert (
        "train.steps (the learning rate's decay (optim_d.schedule='linear')"
        in (config_changes(gan_saved, gan_now)[-1])
    )


def test_ddpm_cifar10_paper_settings():
    c = ddpm_cifar10.get_config()
    assert (c.unet.ch, tuple(c.unet.ch_mult), c.unet.num_res_blocks) == (128, (1, 2, 2, 2), 2)
    assert tuple(c.unet.attn_resolutions) == (16,) and c.unet.dropout == 0.1
    d = c.diffusion
    assert (d.schedule, d.timesteps, d.beta_start, d.beta_end) == ("linear", 1000, 1e-4, 0.02)
    assert (c.optim.name, c.optim.lr, c.optim.warmup_steps, c.optim.grad_clip) == (
        "adam",
        2e-4,
        5000,
        1.0,
    )
    assert (c.data.batch_size, c.ema_decay, c.data.name) == (128, 0.9999, "cifar10")


def test_ddpm_cifar10_tiny_trains_on_tfds_mock_data(tmp_path):
    c = ddpm_cifar10.get_config("tiny")
    with tfds.testing.mock_data(num_examples=32):
        state = run(c, str(tmp_path))
    assert int(state.step) == c.train.steps
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/bpd" in x for x in lines)
    assert (tmp_path / "samples" / f"step_{c.train.steps:07d}.png").exists()


def test_set_fields_sets_nested_literals_and_names_unknown_fields():
    config = vqgan_shapes.get_config("tiny")
    set_fields(config, ["optim.name='sgd'", "vq_loss.disc_start=7", "seed=3"])
    assert (config.optim.name, config.vq_loss.disc_start, config.seed) == ("sgd", 7, 3)
    for bad in ("optim.nme='sgd'", "nosection.lr=1", "seed.x=1"):
        with pytest.raises(ValueError, match=f"the config has no field '{bad.split('=')[0]}'"):
            set_fields(config, [bad])


def test_load_run_config_reads_a_run_and_says_what_is_wrong_otherwise(tmp_path):
    config = vqgan_shapes.get_config("tiny")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert load_run_config(str(tmp_path)).to_dict() == json.loads(json.dumps(config.to_dict()))
    with pytest.raises(FileNotFoundError, match="not a run directory .no such directory"):
        load_run_config(str(tmp_path / "elsewhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a run directory .no config.json in it"):
        load_run_config(str(tmp_path / "empty"))
    (tmp_path / "config.json").write_bytes(b"\x00\xff{")
    with pytest.raises(ValueError, match="config.json is not readable JSON"):
        load_run_config(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a list, not a config"):
        load_run_config(str(tmp_path))
