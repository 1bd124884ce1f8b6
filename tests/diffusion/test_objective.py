"""The DDPM objective: loss, gradients, sampling and bits/dim.

Most tests swap the U-Net for a tiny stand-in with the same call signature
(the objective's logic, fast); one runs the real tiny U-Net end to end.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.diffusion import unet
from zoo.diffusion.objective import build_objective
from zoo.engine.objective import Context
from zoo.nn.dropout import dropout

B, SIZE, CLASSES = 4, 8, 3


def tiny_config(**diffusion):
    c = ml_collections.ConfigDict()
    c.model, c.seed, c.ema_decay = "ddpm", 0, 0.999
    c.data = dict(
        name="fake", image_size=SIZE, channels=1, batch_size=B, random_flip=False,
        num_classes=CLASSES,
    )  # fmt: skip
    c.unet = dict(
        ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), mid_attention=False,
        dropout=0.1, num_heads=1, attention="full", attention_chunk=64, dtype="float32",
    )  # fmt: skip
    c.diffusion = dict(
        schedule="linear", timesteps=10, beta_start=1e-3, beta_end=0.5, prediction="eps",
        variance="fixed_small", sampler="ancestral", sample_steps=5, ddim_eta=0.0,
        clip_denoised=True, condition="none", condition_dropout=0.0, guidance_scale=1.0,
        bpd_eval="mc",
    )  # fmt: skip
    c.diffusion.update(diffusion)
    c.optim = dict(name="adam", lr=1e-3, schedule="constant", warmup_steps=0, grad_clip=1.0)
    c.train = dict(steps=10)
    return c


class StandIn(nnx.Module):
    """conv - time/label embedding - conv, called like the U-Net."""

    def __init__(self, channels, num_classes, *, rngs):
        self.conv_in = nnx.Conv(channels, 8, (3, 3), rngs=rngs)
        self.t_emb = nnx.Embed(1000, 8, rngs=rngs)
        self.y_emb = nnx.Embed(num_classes + 1, 8, rngs=rngs) if num_classes else None
        self.drop = nnx.Dropout(0.1)
        self.conv_out = nnx.Conv(8, channels, (3, 3), rngs=rngs)

    def __call__(self, x, t, y=None, *, dropout_key=None):
        emb = self.t_emb(t) + (self.y_emb(y) if y is not None else 0.0)
        h = nnx.silu(self.conv_in(x) + emb[:, None, None, :])
        if not self.drop.deterministic:
            h = dropout(h, self.drop.rate, dropout_key)  # one mask per example's key
        return self.conv_out(h)


@pytest.fixture
def stand_in(monkeypatch):
    def build(cfg, *, image_size, channels, num_classes=0, in_channels=None, rngs):
        return StandIn(channels, num_classes, rngs=rngs)

    monkeypatch.setattr(unet, "unet_from_config", build)


def fake_models(net):
    """What the engine passes to a loss: train mode, or an eval-mode view."""
    eval_net = nnx.view(net, deterministic=True, raise_if_not_found=False)
    return lambda role, train=True, keep_state=True: net if train else eval_net


def batch_and_ctx(n=B, offset=0):
    key = jax.random.key(7)
    images = jax.random.randint(key, (B, SIZE, SIZE, 1), 0, 256) / 127.5 - 1.0
    batch = {"image": images[offset : offset + n], "label": jnp.arange(offset, offset + n) % 3}
    ctx = Context(
        rng=jax.random.key(11),
        step=jnp.int32(0),
        substep=jnp.int32(0),
        example_ids=jnp.arange(offset, offset + n),
    )
    return batch, ctx


def check_objective(obj, n_samples=5):
    obj.check()
    assert set(obj.modules) == {"model"} and obj.ema == {"model": 0.999}
    (player,) = obj.players
    net = obj.modules["model"]
    batch, ctx = batch_and_ctx()

    @nnx.jit
    def loss_and_grad(module):
        loss_of = lambda m: player.loss(fake_models(m), batch, ctx)  # noqa: E731
        return nnx.value_and_grad(loss_of, has_aux=True)(module)

    (loss, aux), grads = loss_and_grad(net)
    assert loss.shape == () and np.isfinite(float(loss)) and float(aux["loss"]) == float(loss)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)

    x = obj.sample(fake_models(net), jax.random.key(0), n_samples)
    assert x.shape == (n_samples, SIZE, SIZE, 1) and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.abs(x) <= 1.0))
    if obj.evaluate is not None:
        bpd = float(obj.evaluate(fake_models(net), batch, jax.random.key(1))["bpd"])
        assert np.isfinite(bpd) and bpd > 0


COND = dict(condition="class", condition_dropout=0.5, guidance_scale=2.5)


@pytest.mark.parametrize(
    "diffusion",
    [
        dict(),
        dict(
            prediction="v",
            variance="fixed_large",
            schedule="cosine",
            sampler="ddim",
            ddim_eta=0.5,
            bpd_eval="exact",
            **COND,
        ),  # fmt: skip
        dict(sampler="dpm_solver_pp", dynamic_threshold=0.995, prediction="x0", **COND),
    ],
    ids=["uncond-eps-ancestral-mc", "cond-guided-v-cosine-ddim-exact", "cond-dpmpp-thresholded"],
)
def test_objective_with_stand_in(stand_in, diffusion):
    check_objective(build_objective(tiny_config(**diffusion)))


@pytest.mark.slow  # ~20 s of compiling on 2 CPU cores; `pytest -m slow`
def test_objective_with_unet():
    """The real U-Net (dropout on, labels, guidance, DDIM) through loss, grad, sample."""
    check_objective(
        build_objective(tiny_config(sampler="ddim", bpd_eval="none", **COND)), n_samples=2
    )


def test_loss_does_not_depend_on_batch_split(stand_in):
    """t, eps and the dropout masks are drawn per example: two halves average to the whole."""
    obj = build_objective(tiny_config())
    train_net = fake_models(obj.modules["model"])("model", train=True)
    assert not train_net.drop.deterministic
    models = lambda role, train=True, keep_state=True: train_net  # noqa: E731
    loss_fn = jax.jit(lambda b, c: obj.players[0].loss(models, b, c)[0])
    whole = loss_fn(*batch_and_ctx())
    halves = [loss_fn(*batch_and_ctx(B // 2, o)) for o in (0, B // 2)]
    np.testing.assert_allclose(whole, np.mean(halves), rtol=1e-5)


@pytest.mark.parametrize(
    "override,match",
    [
        (dict(prediction="score"), "prediction"),
        (dict(sampler="euler"), "sampler"),
        (dict(bpd_eval="all"), "bpd_eval"),
        (dict(variance="learned"), "variance"),
        (dict(dynamic_threshold=1.5), "dynamic_threshold"),
        (dict(condition="text"), "only data.name=.shapes."),
        (dict(guidance_scale=2.0), "needs a condition"),
        (dict(sample_steps=11), r"sample_steps=11 must lie in \[2, T=10\]"),
        (dict(sample_steps=1), r"sample_steps=1 must lie in \[2, T=10\] for the 'ancestral'"),
        (dict(sampler="ddim", sample_steps=0), r"must lie in \[1, T=10\] for the 'ddim'"),
    ],
)
def test_bad_config_raises(stand_in, override, match):
    with pytest.raises(ValueError, match=match):
        build_objective(tiny_config(**override))


def test_no_eval_and_no_ema(stand_in):
    c = tiny_config(bpd_eval="none")
    c.ema_decay = 0.0
    obj = build_objective(c)
    assert obj.evaluate is None and obj.ema == {}
