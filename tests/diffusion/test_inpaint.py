"""GLIDE's inpainting: training masks, the wrapper's inputs, exact known pixels, the edits the
objective samples, glide_inpaint_shapes:tiny through the engine and experiments/edit_image.py."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import glide_inpaint_shapes
from tests.diffusion.helpers import perturb_params
from zoo import registry
from zoo.data import shapes
from zoo.diffusion import inpaint as inp
from zoo.diffusion.objective import denoiser_from_config, schedule_from_config
from zoo.diffusion.sampling import sample as run_sampler
from zoo.engine.objective import Context
from zoo.engine.rng import example_keys
from zoo.main import run

ROOT = Path(__file__).resolve().parents[2]


def bounding_box(mask):
    """(rows, cols) spanned by the ones of ``[S, S, 1]`` ``mask``, and whether it is that box."""
    m = np.asarray(mask[..., 0]) > 0
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    full = np.zeros_like(m)
    full[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, bool((full == m).all())


@pytest.mark.parametrize("size", [16, 32])
def test_random_masks_are_boxes_or_cells_with_sides_a_quarter_to_three_quarters(size):
    masks = np.asarray(inp.random_masks(jax.random.key(0), 300, size))
    assert masks.shape == (300, size, size, 1) and masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 1.0}
    cells = np.stack([np.asarray(inp.cell_mask(p, size)) for p in range(9)])
    is_cell = (masks[:, None] == cells[None]).all(axis=(2, 3, 4)).any(axis=1)
    assert 0.35 < is_cell.mean() < 0.65  # CELL_PROB = 0.5
    for mask in masks:
        h, w, rectangle = bounding_box(mask)
        assert rectangle and size / 4 <= h <= 3 * size / 4 and size / 4 <= w <= 3 * size / 4
    fraction = masks.mean(axis=(1, 2, 3))
    assert fraction.min() >= 1 / 16 and fraction.max() <= 9 / 16
    assert len({bounding_box(m)[:2] for m in masks[~is_cell]}) > 10  # the boxes vary


@pytest.mark.parametrize("size", [16, 32])
def test_a_cell_mask_covers_every_shape_drawn_at_its_position(size):
    bank = inp.source_bank(size, 3)  # one drawing per label
    for seed in (0, 1):  # and another jitter of each
        bank = np.concatenate([bank, inp.source_bank(size, 3, seed=seed + 1)])
    for k, image in enumerate(bank):
        position = shapes.attributes_of(k % shapes.NUM_CLASSES)[2]
        drawn = (image > -1 + 1e-3).any(-1)
        outside = drawn & (np.asarray(inp.cell_mask(position, size))[..., 0] == 0)
        assert drawn.any() and not outside.any(), (k, position)


class Spy(nnx.Module):
    """Stands in for the inner network: records its input, returns its first C channels."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, t, tokens, *, dropout_key=None):
        self.seen.append(x)
        return x[..., :3] * 0.5


def test_inpainter_sees_the_noisy_image_the_known_pixels_and_the_mask():
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (2, 8, 8, 3))
    known = jax.random.uniform(k2, (2, 8, 8, 3), minval=-1, maxval=1)
    mask = inp.random_masks(jax.random.key(1), 2, 8)
    spy = Spy()
    inp.Inpainter(spy)(x, jnp.zeros((2,), jnp.int32), jnp.ones((2, 7), jnp.int32),
                       known=known, mask=mask)  # fmt: skip
    (seen,) = spy.seen
    assert seen.shape == (2, 8, 8, 7)  # 2 C + 1
    np.testing.assert_array_equal(seen[..., :3], x)
    np.testing.assert_array_equal(seen[..., 3:6], np.where(mask > 0, 0.0, known))
    np.testing.assert_array_equal(seen[..., 6:], mask)


def test_the_masked_pixels_of_known_do_not_reach_the_output():
    config = glide_inpaint_shapes.get_config("tiny")
    net = inp.Inpainter(denoiser_from_config(config, size=16, channels=3, in_channels=7))
    perturb_params(net, 0.05)  # zero-initialised output layers would hide any input
    graphdef, state = nnx.split(nnx.view(net, deterministic=True, raise_if_not_found=False))
    net = jax.jit(lambda *a, **k: nnx.merge(graphdef, state)(*a, **k))
    ks = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(ks[0], (2, 16, 16, 3))
    known = jax.random.uniform(ks[1], (2, 16, 16, 3), minval=-1, maxval=1)
    mask = jnp.stack([inp.cell_mask(4, 16), inp.box_mask(2, 3, 12, 9, 16)])
    t, tokens = jnp.array([3, 40]), jnp.asarray(shapes.caption_table()[0][:2])
    out = net(x, t, tokens, known=known, mask=mask)
    inside = known + 5.0 * jax.random.normal(ks[2], known.shape)
    same = net(x, t, tokens, known=jnp.where(mask > 0, inside, known), mask=mask)
    np.testing.assert_array_equal(same, out)
    nan_inside = net(x, t, tokens, known=jnp.where(mask > 0, jnp.nan, known), mask=mask)
    np.testing.assert_array_equal(nan_inside, out)
    outside = net(x, t, tokens, known=jnp.where(mask > 0, known, -known), mask=mask)
    assert float(jnp.abs(outside - out).max()) > 1e-4  # while the known pixels do


def wavy(x, t, tokens, *, known, mask, dropout_key=None):
    """A stand-in inpainter: an output that is neither zero nor the known image."""
    return jnp.sin(3.0 * x + known) + 0.1 * t[:, None, None, None] / 50.0


@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "dpm_solver_pp"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_inpaint_keeps_the_unmasked_pixels_exactly(sampler, prediction):
    config = glide_inpaint_shapes.get_config("tiny")
    d = config.diffusion
    d.update(dict(sampler=sampler, prediction=prediction))
    sched = schedule_from_config(d)
    known = jnp.asarray(inp.source_bank(16, 3)[:3])
    mask = inp.random_masks(jax.random.key(2), 3, 16)
    tokens = jnp.asarray(shapes.caption_table()[0][:3])
    out = inp.inpaint(d, wavy, sched, jax.random.key(0), known, mask, tokens,
                      jnp.zeros_like(tokens), 2.0)  # fmt: skip
    out, known, m = np.asarray(out), np.asarray(known), np.asarray(mask)[..., 0] > 0
    np.testing.assert_array_equal(out[~m], known[~m])
    assert np.abs(out[m] - known[m]).max() > 0.1  # the hole is filled, not copied
    assert np.abs(out).max() <= 1.0


def test_the_replacement_step_alone_ends_a_ddim_chain_on_the_known_pixels():
    """:func:`known_denoiser` (no paste): deterministic DDIM ends within rounding of them."""
    config = glide_inpaint_shapes.get_config("tiny")
    d, sched = config.diffusion, schedule_from_config(config.diffusion)
    known = jnp.asarray(inp.source_bank(16, 3)[10:12])
    mask = jnp.stack([inp.cell_mask(1, 16), inp.cell_mask(7, 16)])

    def denoise(x, t):
        return wavy(x, t, None, known=known, mask=mask)

    replaced = inp.known_denoiser(denoise, sched, known, mask, d.prediction)
    out = np.asarray(run_sampler(d, replaced, sched, jax.random.key(0), known.shape))
    m = np.asarray(mask)[..., 0] > 0
    np.testing.assert_allclose(out[~m], np.asarray(known)[~m], atol=1e-4)
    plain = np.asarray(run_sampler(d, denoise, sched, jax.random.key(0), known.shape))
    assert np.abs(plain[~m] - np.asarray(known)[~m]).max() > 0.1  # not so without it


def test_edit_tasks_keep_the_position_and_change_the_shape_or_colour():
    bank = jnp.asarray(inp.source_bank(16, 3))
    table = jnp.asarray(shapes.caption_table()[0])
    extra, tokens, f = inp.edit_tasks(jax.random.key(0), 500, bank, table)
    f = {k: np.asarray(v) for k, v in f.items()}
    source = np.array([shapes.attributes_of(int(k)) for k in f["source_label"]])
    np.testing.assert_array_equal(f["position"], source[:, 2])
    new_shape, new_color = f["shape"] != source[:, 0], f["color"] != source[:, 1]
    assert (new_shape | new_color).all() and new_shape.any() and new_color.any()
    targets = np.stack([f["shape"], f["color"], f["position"]], axis=1).tolist()
    np.testing.assert_array_equal(f["label"], [shapes.label_of(*a) for a in targets])
    captions = [shapes.caption(*a) for a in targets]
    assert shapes.SHAPES_TOKENIZER.decode(np.asarray(tokens)) == captions
    np.testing.assert_array_equal(extra["known"], bank[f["source_label"]])
    for p in range(9):
        np.testing.assert_array_equal(extra["mask"][f["position"] == p][0], inp.cell_mask(p, 16))


def test_the_loss_gives_each_example_its_own_mask_and_the_clean_image():
    objective = registry.build_objective(glide_inpaint_shapes.get_config("tiny"))
    seen = []

    def spy(x, t, tokens, *, known, mask, dropout_key=None):
        seen.append(dict(known=known, mask=mask))
        return jnp.zeros_like(x)

    n = 16
    x0 = jax.random.uniform(jax.random.key(0), (n, 16, 16, 3), minval=-1, maxval=1)
    ctx = Context(jax.random.key(1), jnp.int32(0), jnp.int32(0), jnp.arange(n, dtype=jnp.int32))
    batch = {"image": x0, "tokens": jnp.ones((n, 7), jnp.int32)}
    objective.players[0].loss(lambda role, **kw: spy, batch, ctx)
    (got,) = seen
    np.testing.assert_array_equal(got["known"], x0)
    expected = jax.vmap(lambda k: inp.random_mask(k, 16))(example_keys(ctx, "mask"))
    np.testing.assert_array_equal(got["mask"], expected)
    assert len({np.asarray(m).tobytes() for m in got["mask"]}) > n // 2


def test_config_errors():
    config = glide_inpaint_shapes.get_config("tiny")
    config.diffusion.bpd_eval = "mc"
    with pytest.raises(ValueError, match="no bits/dim eval"):
        registry.build_objective(config)
    config = glide_inpaint_shapes.get_config("tiny")
    config.diffusion.condition = "none"
    with pytest.raises(ValueError, match="edits shapes images from captions"):
        registry.build_objective(config)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """glide_inpaint_shapes:tiny trained for one step through the engine: (workdir, state)."""
    workdir = tmp_path_factory.mktemp("inpaint")
    config = glide_inpaint_shapes.get_config("tiny")
    config.train.update(dict(steps=1, log_every=1, sample_every=0, eval_every=0))
    config.train.checkpoint_every = 1
    config.eval.num_samples = 0
    return str(workdir), run(config, str(workdir))


@pytest.mark.slow  # a run and the edit sampler's compile (~18 s); test_configs trains it too
def test_tiny_config_trains_a_step_and_samples_edits(tiny_run):
    _, state = tiny_run
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params["model"]))
    objective = registry.build_objective(glide_inpaint_shapes.get_config("tiny"))
    module = objective.modules["model"]
    perturb_params(module, 0.05)

    def models(role, train=True, keep_state=True):
        return nnx.view(module, deterministic=True, raise_if_not_found=False)

    samples = {k: np.asarray(v) for k, v in objective.sample(models, jax.random.key(0), 8).items()}
    assert samples["image"].shape == (8, 16, 16, 3)
    kept = samples["mask"][..., 0] == 0
    np.testing.assert_array_equal(samples["image"][kept], samples["known"][kept])
    attributes = shapes.caption_table()[1][samples["label"]]
    for i, field in enumerate(("shape", "color", "position")):
        np.testing.assert_array_equal(samples[field], attributes[:, i])
    figure = objective.figures["edits"](models, jax.random.key(0))  # the same 8 edits
    assert figure.shape == (3, 8, 16, 16, 3)
    np.testing.assert_array_equal(figure[2], samples["image"])


def edit_image():
    spec = importlib.util.spec_from_file_location("edit_image", ROOT / "experiments/edit_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def config_only(tmp_path):
    """A run directory with only config.json: enough for the CLI's argument checks."""
    config = glide_inpaint_shapes.get_config("tiny")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "missing.png"], "--image missing.png: no such file"),
        (["--image", "broken.png"], "not a readable image"),
        (["--image", "wide.png"], "is 40x20: the run edits square 16x16 images"),
        (["--source_caption", "a red circle at the top left", "--box", "0,0,20,8"],
         "--box 0,0,20,8 does not lie inside the 16x16 input"),
        (["--image", "ok.png", "--box", "30,0,20,8"], "--box 30,0,20,8 does not lie inside the 32"),
        (["--image", "ok.png", "--box", "1,2,3"], "want TOP,LEFT,BOTTOM,RIGHT integers"),
        (["--image", "ok.png", "--caption", "a red hexagon"], "unknown words ['hexagon']"),
        (["--source_caption", "a red circle at the"], "is no shapes caption"),
    ],
)  # fmt: skip
def test_edit_image_refuses_bad_inputs_with_one_line(args, message, config_only, monkeypatch):
    monkeypatch.chdir(config_only)
    (config_only / "broken.png").write_bytes(b"not a png")
    from PIL import Image

    Image.new("RGB", (40, 20)).save(config_only / "wide.png")
    Image.new("RGB", (32, 32)).save(config_only / "ok.png")
    defaults = {"--box": "0,0,8,8", "--caption": "a blue square at the top left"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    with pytest.raises(SystemExit) as err:
        edit_image()([str(config_only), *args, "--out", "out.png"])
    assert message in str(err.value)


def test_edit_image_refuses_a_run_that_is_not_inpainting(config_only):
    config = json.loads((config_only / "config.json").read_text())
    config["model"] = "ddpm"
    (config_only / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="holds a 'ddpm' run, not an 'inpaint' one"):
        edit_image()([str(config_only), "--source_caption", "a red circle at the top",
                      "--box", "0,0,4,4", "--caption", "a red square at the top",
                      "--out", "x.png"])  # fmt: skip


@pytest.mark.slow  # restores the run and compiles its sampler (about 20 s on 2 loaded cores)
def test_edit_image_writes_the_input_and_the_edits_side_by_side(tiny_run, tmp_path, capsys):
    from PIL import Image

    workdir, _ = tiny_run
    source = np.zeros((48, 48, 3), np.uint8)
    source[30:46, 2:18] = (230, 40, 40)  # a red square at the bottom left
    Image.fromarray(source).save(tmp_path / "in.png")
    out = tmp_path / "edited.png"
    edit_image()([workdir, "--image", str(tmp_path / "in.png"), "--box", "32,0,48,16",
                  "--caption", "a green circle at the bottom left", "--out", str(out),
                  "--num", "2", "--guidance", "2"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1 and summary["guidance"] == 2.0
    assert summary["masked_pixels"] == 6 * 6  # rows and columns 10..15 and 0..5 of 16x16
    written = np.asarray(Image.open(out))
    assert written.shape == (128, 4 * 128, 3)  # input | hole | 2 edits, 8x enlarged
    scale = 8
    edits = written[:, 2 * 128 :].reshape(128, 2, 128, 3)
    keep = np.ones((128, 128), bool)
    keep[10 * scale :, : 6 * scale] = False
    for k in range(2):  # the pixels outside the box are the input's
        np.testing.assert_array_equal(edits[:, k][keep], written[:, :128][keep])
