"""Trained stages: a stage-1 run written here, then stage-2 runs that load it."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.ddpm_digits import get_config
from zoo import registry
from zoo.engine import stages
from zoo.engine.loop import Trainer
from zoo.engine.objective import Objective, Player
from zoo.engine.rng import per_example


def tiny(steps, **train):
    c = get_config("tiny")
    c.data.batch_size = 8
    c.train.update(
        dict(steps=steps, log_every=steps, sample_every=0, eval_every=0, checkpoint_every=2)
    )
    c.train.update(train)
    c.eval.num_samples = 0
    return c


def train_stage1(workdir, steps=2):
    c = tiny(steps)
    Trainer(c, str(workdir), registry.build_objective(c)).train()


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stage1")
    train_stage1(workdir)
    return workdir


def stage1_variables(workdir, source="ema"):
    """The stage-1 run's (params, rest) of role "model", read with its own objective."""
    c = tiny(2)
    trainer = Trainer(c, str(workdir), registry.build_objective(c))
    state, _ = trainer.restore_or_init()
    trainer.checkpointer.close()
    return getattr(state, source)["model"], state.rest["model"]


def distill(config, teacher=None):
    """Stage 2: a 1x1 conv "student" regresses the frozen stage-1 U-Net ("teacher")."""
    if teacher is None:
        teacher_config = stages.source_config(config, "teacher")
        teacher = registry.build_objective(teacher_config).modules["model"]
    student = nnx.Conv(1, 1, (1, 1), rngs=nnx.Rngs(0))

    def loss(models, batch, ctx):
        x = batch["image"]
        t = per_example(ctx, jax.random.randint, (), 0, 50)
        target = models("teacher")(x, t)
        value = jnp.mean((models("student")(x) - target) ** 2)
        return value, {"mse": value}

    def sample(models, rng, n):
        x = jax.random.normal(rng, (n, 8, 8, 1))
        return models("teacher", train=True)(x, jnp.zeros((n,), jnp.int32))

    return Objective(
        modules={"student": student},
        optimizers={"student": optax.sgd(0.1)},
        players=(Player("distill", "student", loss),),
        frozen={"teacher": teacher},
        sample=sample,
    )


def stage2_config(stage1_dir, steps=2, **entry):
    c = tiny(steps)
    c.stages = dict(teacher=stages.stage_entry("model", str(stage1_dir), **entry))
    return c


def teacher_hash(trainer):
    return stages.content_hash(trainer.frozen.params["teacher"], trainer.frozen.rest["teacher"])


def leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_stage_two_serves_stage_one_weights_frozen(stage1, tmp_path):
    c = stage2_config(stage1)
    trainer = Trainer(c, str(tmp_path), distill(c))
    ema, rest = stage1_variables(stage1)
    assert leaves_equal(trainer.frozen.params["teacher"], ema)  # the EMA copy by default
    assert leaves_equal(trainer.frozen.rest["teacher"], rest)
    before = jax.tree.map(np.asarray, trainer.frozen)
    state = trainer.train()
    # the student trained, the teacher received no update and has no optimizer state
    initial = nnx.to_pure_dict(nnx.state(distill(c).modules["student"], nnx.Param))
    assert not leaves_equal(state.params["student"], initial)
    assert leaves_equal(trainer.frozen, before)
    assert set(state.params) == set(state.opt) == {"student"}
    record = json.loads((tmp_path / "stages.json").read_text())["stages"]["teacher"]
    assert record["step"] == 2 and record["source"] == "ema" and record["model"] == "ddpm"
    assert record["hash"] == stages.content_hash(ema, rest)
    # sampling gets the frozen role too, in eval mode whatever it asks for
    assert trainer.samples(state, 2)["image"].shape == (2, 8, 8, 1)


def test_raw_parameters_when_ema_is_false(stage1, tmp_path):
    c = stage2_config(stage1, ema=False)
    trainer = Trainer(c, str(tmp_path), distill(c))
    params, _ = stage1_variables(stage1, source="params")
    assert leaves_equal(trainer.frozen.params["teacher"], params)


def test_stage_weights_are_arguments_of_the_compiled_step(stage1, tmp_path):
    """Other stage-1 weights change stage 2's loss, through the same executable."""
    c = stage2_config(stage1)
    trainer = Trainer(c, str(tmp_path), distill(c))
    batch = trainer.runner.put_batch(trainer.host_batch(0))
    active = (True,)
    other = jax.tree.map(lambda x: x * 1.5, trainer.frozen)
    losses = []
    for frozen in (trainer.frozen, other, trainer.frozen):
        state, _ = trainer.restore_or_init()
        _, metrics = trainer.run_step(state, batch, active, frozen)
        losses.append(float(metrics["distill/loss"]))
    assert losses[0] != losses[1] and losses[0] == losses[2]


def test_resume_uses_the_recorded_weights(tmp_path):
    stage1_dir, stage2_dir = tmp_path / "stage1", tmp_path / "stage2"
    train_stage1(stage1_dir, steps=2)
    c = stage2_config(stage1_dir, steps=2)
    Trainer(c, str(stage2_dir), distill(c)).train()
    recorded = json.loads((stage2_dir / "stages.json").read_text())["stages"]["teacher"]
    # stage 1 trains on, and its step-2 checkpoint is deleted
    train_stage1(stage1_dir, steps=4)
    shutil.rmtree(stage1_dir / "checkpoints" / "2")
    c = stage2_config(stage1_dir, steps=4)
    resumed = Trainer(c, str(stage2_dir), distill(c))
    newest = stages.content_hash(*stage1_variables(stage1_dir))
    assert teacher_hash(resumed) == recorded["hash"] != newest
    resumed.train()
    assert json.loads((stage2_dir / "stages.json").read_text())["stages"]["teacher"] == recorded
    # a copy that no longer matches its record is an error, not a silent swap
    records = json.loads((stage2_dir / "stages.json").read_text())
    records["stages"]["teacher"]["hash"] = "0" * 64
    (stage2_dir / "stages.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match="does not match the hash recorded"):
        Trainer(c, str(stage2_dir), distill(c))
    # a fresh stage-2 run takes stage 1's newest checkpoint
    assert teacher_hash(Trainer(c, str(tmp_path / "fresh"), distill(c))) == newest


def test_init_loads_a_trained_role(stage1, tmp_path):
    c = tiny(2)
    c.init = dict(model=stages.stage_entry("model", str(stage1), ema=False))
    trainer = Trainer(c, str(tmp_path), registry.build_objective(c))
    state, start = trainer.restore_or_init()
    params, rest = stage1_variables(stage1, source="params")
    assert start == 0 and int(state.step) == 0
    assert leaves_equal(state.params["model"], params)
    assert leaves_equal(state.ema["model"], params)  # the EMA starts from them too
    trainer.checkpointer.close()
    record = json.loads((tmp_path / "stages.json").read_text())["init"]["model"]
    assert record["source"] == "params" and record["step"] == 2


def test_errors_name_the_config_field(stage1, tmp_path):
    def build(**entry):
        c = stage2_config(stage1)
        c.stages.teacher.update(entry)
        return c

    teacher = registry.build_objective(tiny(2)).modules["model"]
    cases = [
        (dict(workdir=str(tmp_path / "nowhere")), r"config.stages.teacher.workdir=.*no such"),
        (dict(workdir=str(tmp_path)), r"config.stages.teacher.workdir=.*no checkpoints"),
        (dict(role="generator"), r"config.stages.teacher.role='generator'.*roles are \['model'\]"),
        (dict(step=5), r"config.stages.teacher.step=5: no such checkpoint; it has \[2\]"),
    ]
    for entry, message in cases:
        with pytest.raises(ValueError, match=message):
            Trainer(build(**entry), str(tmp_path / "run"), distill(build(), teacher))
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"config.stages.teacher.workdir=.*no checkpoint yet"):
        stages.check_stages(build(workdir=str(tmp_path / "empty")))
    wide = tiny(2)
    wide.unet.ch = 8
    narrow_teacher = registry.build_objective(wide).modules["model"]
    with pytest.raises(ValueError, match=r"config.stages.teacher: .*does not fit.*checkpoint \("):
        Trainer(build(), str(tmp_path / "run"), distill(build(), narrow_teacher))
    c = build()
    c.stages.other = stages.stage_entry("model", str(stage1))
    with pytest.raises(ValueError, match=r"config.stages.other: .*no frozen role 'other'"):
        Trainer(c, str(tmp_path / "run"), distill(build(), teacher))
    c = tiny(2)
    c.init = dict(critic=stages.stage_entry("model", str(stage1)))
    with pytest.raises(ValueError, match=r"config.init.critic: .*trains no role 'critic'"):
        Trainer(c, str(tmp_path / "run2"), registry.build_objective(c))
    c = build()
    c.stages.teacher.workdir = ""
    with pytest.raises(ValueError, match=r"config.stages.teacher.workdir must name"):
        Trainer(c, str(tmp_path / "run"), distill(build(), teacher))


def test_a_gan_starts_from_a_pretrained_generator_from_the_command_line(tmp_path):
    """config.init.generator, set by an override, through zoo.main's checks and the trainer."""
    from configs.dcgan_digits import get_config as dcgan
    from zoo.main import prepare

    first = dcgan("tiny")
    first.train.update(dict(sample_every=0, eval_every=0))
    first.eval.num_samples = 0
    Trainer(first, str(tmp_path / "pretrained"), registry.build_objective(first)).train()
    second = dcgan("tiny")
    second.eval.num_samples = 0
    second.init.generator.workdir = str(tmp_path / "pretrained")
    trainer = prepare(second, str(tmp_path / "tuned"))
    state, _ = trainer.restore_or_init()
    old = Trainer(first, str(tmp_path / "pretrained"), registry.build_objective(first))
    old_state, _ = old.restore_or_init()
    assert leaves_equal(state.params["generator"], old_state.ema["generator"])
    assert not leaves_equal(state.params["discriminator"], old_state.params["discriminator"])
    for t in (trainer, old):
        t.checkpointer.close()
