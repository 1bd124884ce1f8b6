"""Stable Diffusion 1.x in diffusers' format: parameter counts, and the converter checked
against a float64 numpy forward pass written from diffusers' layout, not from the zoo's.

The tensor names and PyTorch shapes below are generated from diffusers' own description of
the models (block_out_channels, layers_per_block, which blocks cross-attend); at SD 1.x's
sizes they sum to the published 859,520,964 and 83,653,863 parameters.
"""

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from scipy.special import erf

from configs import sd_v1
from zoo.diffusion.diffusers_weights import (
    UNET_RULES,
    VAE_RULES,
    DiffusersWeightsError,
    diffusers_names,
    load_diffusers_unet,
    load_diffusers_vae,
    sample_stable_diffusion,
    stable_diffusion_unet,
    stable_diffusion_vae,
)

SD_UNET = dict(widths=(320, 640, 1280, 1280), layers=2, context=768, attn=(1, 1, 1, 0))
SD_VAE = dict(widths=(128, 256, 512, 512), layers=2)
TINY_UNET = dict(widths=(32, 64, 128, 128), layers=2, context=16, attn=(1, 1, 1, 0))
TINY_VAE = dict(widths=(32, 64, 128, 128), layers=2)
HEADS = 8


class _Tensors(dict):
    """name -> PyTorch shape, in diffusers' naming."""

    def conv(self, name, out, inp, k):
        self[f"{name}.weight"], self[f"{name}.bias"] = (out, inp, k, k), (out,)

    def linear(self, name, out, inp, bias=True):
        self[f"{name}.weight"] = (out, inp)
        if bias:
            self[f"{name}.bias"] = (out,)

    def norm(self, name, c):
        self[f"{name}.weight"], self[f"{name}.bias"] = (c,), (c,)

    def resnet(self, name, inp, out, temb=None):
        self.norm(f"{name}.norm1", inp)
        self.conv(f"{name}.conv1", out, inp, 3)
        if temb:
            self.linear(f"{name}.time_emb_proj", out, temb)
        self.norm(f"{name}.norm2", out)
        self.conv(f"{name}.conv2", out, out, 3)
        if inp != out:
            self.conv(f"{name}.conv_shortcut", out, inp, 1)

    def transformer(self, name, c, context):  # Transformer2DModel, one BasicTransformerBlock
        self.norm(f"{name}.norm", c)
        self.conv(f"{name}.proj_in", c, c, 1)
        block = f"{name}.transformer_blocks.0"
        for attn, kv in (("attn1", c), ("attn2", context)):
            self.norm(f"{block}.norm{attn[-1]}", c)
            for proj, inp in (("to_q", c), ("to_k", kv), ("to_v", kv)):
                self.linear(f"{block}.{attn}.{proj}", c, inp, bias=False)
            self.linear(f"{block}.{attn}.to_out.0", c, c)
        self.norm(f"{block}.norm3", c)
        self.linear(f"{block}.ff.net.0.proj", 8 * c, c)
        self.linear(f"{block}.ff.net.2", c, 4 * c)
        self.conv(f"{name}.proj_out", c, c, 1)


def unet_tensors(widths, layers, context, attn):
    """UNet2DConditionModel(in/out 4, CrossAttnDownBlock2D x3 + DownBlock2D, UpBlock2D +
    CrossAttnUpBlock2D x3), with its own formulas for the up blocks' input channels."""
    t, temb, n = _Tensors(), 4 * widths[0], len(widths)
    t.conv("conv_in", widths[0], 4, 3)
    t.linear("time_embedding.linear_1", temb, widths[0])
    t.linear("time_embedding.linear_2", temb, temb)
    inp = widths[0]
    for i, out in enumerate(widths):
        for j in range(layers):
            t.resnet(f"down_blocks.{i}.resnets.{j}", inp if j == 0 else out, out, temb)
            if attn[i]:
                t.transformer(f"down_blocks.{i}.attentions.{j}", out, context)
        if i < n - 1:
            t.conv(f"down_blocks.{i}.downsamplers.0.conv", out, out, 3)
        inp = out
    t.resnet("mid_block.resnets.0", widths[-1], widths[-1], temb)
    t.transformer("mid_block.attentions.0", widths[-1], context)
    t.resnet("mid_block.resnets.1", widths[-1], widths[-1], temb)
    rev, prev = widths[::-1], widths[-1]
    for k, out in enumerate(rev):
        block_in = rev[min(k + 1, n - 1)]
        for j in range(layers + 1):
            skip = block_in if j == layers else out
            t.resnet(f"up_blocks.{k}.resnets.{j}", (prev if j == 0 else out) + skip, out, temb)
            if attn[n - 1 - k]:
                t.transformer(f"up_blocks.{k}.attentions.{j}", out, context)
        if k < n - 1:
            t.conv(f"up_blocks.{k}.upsamplers.0.conv", out, out, 3)
        prev = out
    t.norm("conv_norm_out", widths[0])
    t.conv("conv_out", 4, widths[0], 3)
    return t


def vae_tensors(widths, layers):
    """AutoencoderKL(3 channels, 4 latent channels)."""
    t = _Tensors()

    def middle(part, c):
        t.resnet(f"{part}.mid_block.resnets.0", c, c)
        t.norm(f"{part}.mid_block.attentions.0.group_norm", c)
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            t.linear(f"{part}.mid_block.attentions.0.{proj}", c, c)
        t.resnet(f"{part}.mid_block.resnets.1", c, c)

    t.conv("encoder.conv_in", widths[0], 3, 3)
    inp = widths[0]
    for i, out in enumerate(widths):
        for j in range(layers):
            t.resnet(f"encoder.down_blocks.{i}.resnets.{j}", inp, out)
            inp = out
        if i < len(widths) - 1:
            t.conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", out, out, 3)
    middle("encoder", inp)
    t.norm("encoder.conv_norm_out", inp)
    t.conv("encoder.conv_out", 8, inp, 3)
    t.conv("quant_conv", 8, 8, 1)
    t.conv("post_quant_conv", 4, 4, 1)
    t.conv("decoder.conv_in", inp, 4, 3)
    middle("decoder", inp)
    for k, out in enumerate(widths[::-1]):
        for j in range(layers + 1):
            t.resnet(f"decoder.up_blocks.{k}.resnets.{j}", inp, out)
            inp = out
        if k < len(widths) - 1:
            t.conv(f"decoder.up_blocks.{k}.upsamplers.0.conv", out, out, 3)
    t.norm("decoder.conv_norm_out", inp)
    t.conv("decoder.conv_out", 3, inp, 3)
    return t


def random_weights(shapes, seed, dtype=np.float32):
    """Weights ~ N(0, 1/fan_in), biases and norm shifts ~ 0.1 N, norm scales ~ 1 + 0.1 N."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        if len(shape) > 1:
            w = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            w = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.standard_normal(shape)
        out[name] = w.astype(dtype)
    return out


def _count(module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_paper_scale_unet_and_vae_have_sd_v1_layout_and_counts():
    """Counted abstractly (nnx.eval_shape): no 3.4 GB allocation."""
    config = sd_v1.get_config()
    unet, vae = stable_diffusion_unet(config), stable_diffusion_vae(config)
    assert _count(unet) == sum(map(np.prod, unet_tensors(**SD_UNET).values())) == 859_520_964
    assert _count(vae) == sum(map(np.prod, vae_tensors(**SD_VAE).values())) == 83_653_863
    assert set(diffusers_names(unet, UNET_RULES)) == set(unet_tensors(**SD_UNET))
    assert set(diffusers_names(vae, VAE_RULES)) == set(vae_tensors(**SD_VAE))
    # Epsilons change no shape, and too little the output for the forward test to see:
    # diffusers' U-Net norms 1e-5 except the transformers' GroupNorm (1e-6); the VAE 1e-6.
    eps = {}
    for path, node in nnx.iter_graph(unet):
        if isinstance(node, nnx.GroupNorm | nnx.LayerNorm):
            in_transformer = "attns" in path or "mid_attn" in path
            group = isinstance(node, nnx.GroupNorm)
            kind = "transformer GroupNorm" if in_transformer and group else type(node).__name__
            eps.setdefault(kind, set()).add(node.epsilon)
    assert eps == {"GroupNorm": {1e-5}, "transformer GroupNorm": {1e-6}, "LayerNorm": {1e-5}}
    vae_eps = {n.epsilon for _, n in nnx.iter_graph(vae) if isinstance(n, nnx.GroupNorm)}
    assert vae_eps == {1e-6}


# float64 numpy forward passes in diffusers' semantics, from PyTorch-layout weights.
def _conv(p, name, x, stride=1, pad=None):
    w = p[f"{name}.weight"].astype(np.float64)  # [O, I, k, k]
    k = w.shape[-1]
    pad = (k // 2, k // 2) if pad is None else pad
    x = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[0]))
    for i in range(k):
        for j in range(k):
            out += (
                x[:, i : i + stride * ho : stride, j : j + stride * wo : stride] @ w[:, :, i, j].T
            )
    return out + p[f"{name}.bias"]


def _linear(p, name, x):
    y = x @ p[f"{name}.weight"].astype(np.float64).T
    return y + p[f"{name}.bias"] if f"{name}.bias" in p else y


def _group_norm(p, name, x, eps):
    b, h, w, c = x.shape
    y = x.reshape(b, h, w, 32, -1)  # norm_num_groups=32
    y = (y - y.mean((1, 2, 4), keepdims=True)) / np.sqrt(y.var((1, 2, 4), keepdims=True) + eps)
    return y.reshape(x.shape) * p[f"{name}.weight"] + p[f"{name}.bias"]


def _layer_norm(p, name, x, eps=1e-5):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y * p[f"{name}.weight"] + p[f"{name}.bias"]


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _attention(p, name, x, context, heads):
    q = _linear(p, f"{name}.to_q", x)
    k, v = _linear(p, f"{name}.to_k", context), _linear(p, f"{name}.to_v", context)
    b, n, c = q.shape
    q, k, v = (a.reshape(b, -1, heads, c // heads) for a in (q, k, v))
    s = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(c // heads)
    a = np.exp(s - s.max(-1, keepdims=True))
    o = np.einsum("bhnm,bmhd->bnhd", a / a.sum(-1, keepdims=True), v).reshape(b, n, c)
    return _linear(p, f"{name}.to_out.0", o)


def _resnet(p, name, x, temb, eps):
    h = _conv(p, f"{name}.conv1", _silu(_group_norm(p, f"{name}.norm1", x, eps)))
    if temb is not None:
        h = h + _linear(p, f"{name}.time_emb_proj", _silu(temb))[:, None, None]
    h = _conv(p, f"{name}.conv2", _silu(_group_norm(p, f"{name}.norm2", h, eps)))
    return (_conv(p, f"{name}.conv_shortcut", x) if f"{name}.conv_shortcut.weight" in p else x) + h


def _transformer(p, name, x, context):
    b, hh, ww, c = x.shape
    h = _conv(p, f"{name}.proj_in", _group_norm(p, f"{name}.norm", x, 1e-6)).reshape(b, -1, c)
    blk = f"{name}.transformer_blocks.0"
    n = _layer_norm(p, f"{blk}.norm1", h)
    h = h + _attention(p, f"{blk}.attn1", n, n, HEADS)
    h = h + _attention(p, f"{blk}.attn2", _layer_norm(p, f"{blk}.norm2", h), context, HEADS)
    value, gate = np.split(
        _linear(p, f"{blk}.ff.net.0.proj", _layer_norm(p, f"{blk}.norm3", h)), 2, -1
    )
    h = h + _linear(p, f"{blk}.ff.net.2", value * 0.5 * gate * (1.0 + erf(gate / np.sqrt(2.0))))
    return x + _conv(p, f"{name}.proj_out", h.reshape(b, hh, ww, c))


def unet_reference(p, x, t, tokens, widths, layers, attn, **_):
    half = widths[0] // 2  # flip_sin_to_cos=True, freq_shift=0
    args = t[:, None] * np.exp(-np.log(10_000.0) * np.arange(half) / half)
    emb = np.concatenate([np.cos(args), np.sin(args)], -1)
    emb = _linear(p, "time_embedding.linear_2", _silu(_linear(p, "time_embedding.linear_1", emb)))
    h = _conv(p, "conv_in", x)
    skips, n = [h], len(widths)
    for i in range(n):
        for j in range(layers):
            h = _resnet(p, f"down_blocks.{i}.resnets.{j}", h, emb, 1e-5)
            h = _transformer(p, f"down_blocks.{i}.attentions.{j}", h, tokens) if attn[i] else h
            skips.append(h)
        if i < n - 1:
            h = _conv(p, f"down_blocks.{i}.downsamplers.0.conv", h, stride=2)
            skips.append(h)
    h = _resnet(p, "mid_block.resnets.0", h, emb, 1e-5)
    h = _transformer(p, "mid_block.attentions.0", h, tokens)
    h = _resnet(p, "mid_block.resnets.1", h, emb, 1e-5)
    for k in range(n):
        for j in range(layers + 1):
            h = np.concatenate([h, skips.pop()], -1)  # diffusers: cat([hidden, skip], dim=1)
            h = _resnet(p, f"up_blocks.{k}.resnets.{j}", h, emb, 1e-5)
            h = (
                _transformer(p, f"up_blocks.{k}.attentions.{j}", h, tokens)
                if attn[n - 1 - k]
                else h
            )
        if k < n - 1:
            h = _conv(p, f"up_blocks.{k}.upsamplers.0.conv", h.repeat(2, 1).repeat(2, 2))
    return _conv(p, "conv_out", _silu(_group_norm(p, "conv_norm_out", h, 1e-5)))


def vae_reference(p, x, widths, layers):
    """(posterior mean, decoded mean) of AutoencoderKL."""

    def middle(part, h):
        h = _resnet(p, f"{part}.mid_block.resnets.0", h, None, 1e-6)
        name = f"{part}.mid_block.attentions.0"
        n = _group_norm(p, f"{name}.group_norm", h, 1e-6).reshape(h.shape[0], -1, h.shape[-1])
        h = h + _attention(p, name, n, n, 1).reshape(h.shape)
        return _resnet(p, f"{part}.mid_block.resnets.1", h, None, 1e-6)

    h = _conv(p, "encoder.conv_in", x)
    for i in range(len(widths)):
        for j in range(layers):
            h = _resnet(p, f"encoder.down_blocks.{i}.resnets.{j}", h, None, 1e-6)
        if i < len(widths) - 1:  # taming's asymmetric padding: one zero row/column after
            h = _conv(p, f"encoder.down_blocks.{i}.downsamplers.0.conv", h, 2, pad=(0, 1))
    h = _silu(_group_norm(p, "encoder.conv_norm_out", middle("encoder", h), 1e-6))
    mean = _conv(p, "quant_conv", _conv(p, "encoder.conv_out", h))[..., :4]
    h = middle("decoder", _conv(p, "decoder.conv_in", _conv(p, "post_quant_conv", mean)))
    for k in range(len(widths)):
        for j in range(layers + 1):
            h = _resnet(p, f"decoder.up_blocks.{k}.resnets.{j}", h, None, 1e-6)
        if k < len(widths) - 1:
            h = _conv(p, f"decoder.up_blocks.{k}.upsamplers.0.conv", h.repeat(2, 1).repeat(2, 2))
    return mean, _conv(
        p, "decoder.conv_out", _silu(_group_norm(p, "decoder.conv_norm_out", h, 1e-6))
    )


def _close(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, atol=1e-4 * scale, rtol=0)


@pytest.fixture(scope="module")
def tiny():
    return sd_v1.get_config("tiny")


def test_tiny_unet_loads_every_tensor_and_matches_the_diffusers_forward(tiny, tmp_path):
    weights = random_weights(unet_tensors(**TINY_UNET), seed=0)
    save_file(weights, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    unet = load_diffusers_unet(tmp_path, stable_diffusion_unet(tiny))
    # Round trip, with the test's own layout rule: OIHW -> HWIO, (out, in) -> (in, out).
    params = dict(nnx.to_flat_state(nnx.state(unet, nnx.Param)))
    for name, path in diffusers_names(unet, UNET_RULES).items():
        value = np.asarray(params[path].get_value())  # an array: the module is no longer abstract
        w = weights[name]
        w = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T if w.ndim == 2 else w
        np.testing.assert_array_equal(value, w, err_msg=name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
    t = np.array([7, 901])
    context = rng.standard_normal((2, 5, 16)).astype(np.float32)
    out = nnx.jit(lambda m, x, t, c: m(x, t, context=c))(unet, x, t, context)
    p64 = {k: v.astype(np.float64) for k, v in weights.items()}
    reference = unet_reference(
        p64, x.astype(np.float64), t.astype(np.float64), context, **TINY_UNET
    )
    _close(out, reference)
    # Sampling with the loaded U-Net: guidance mixes eps(null) + s (eps(c) - eps(null)),
    # so s = 0 with (c, null) = (a, b) is s = 1 with (b, a).
    config = sd_v1.get_config("tiny")
    config.diffusion.sample_steps = 2
    vae = stable_diffusion_vae(config, abstract=False)
    a, b, key = context[:1], context[1:], jax.random.key(0)
    images = sample_stable_diffusion(unet, vae, config, a, b, key, guidance_scale=0.0)
    assert images.shape == (1, 128, 128, 3) and np.all(np.abs(images) <= 1.0)
    swapped = sample_stable_diffusion(unet, vae, config, b, a, key, guidance_scale=1.0)
    np.testing.assert_allclose(images, swapped, atol=1e-5)
    assert np.abs(sample_stable_diffusion(unet, vae, config, a, b, key) - images).max() > 1e-3


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy_names"])
def test_tiny_vae_loads_float16_weights_and_matches_the_diffusers_forward(tiny, tmp_path, legacy):
    weights = random_weights(vae_tensors(**TINY_VAE), seed=2, dtype=np.float16)
    stored = weights
    if legacy:  # diffusers < 0.14 names; files converted from LDM checkpoints: 1x1 convs
        old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        stored = {}
        for name, w in weights.items():
            for new_name, old_name in old.items():
                if f"attentions.0.{new_name}." in name:
                    name = name.replace(new_name, old_name)
                    w = w[..., None, None] if w.ndim == 2 else w
            stored[name] = w
        assert "decoder.mid_block.attentions.0.proj_attn.weight" in stored
    save_file(stored, str(tmp_path / "model.safetensors"))
    vae = load_diffusers_vae(tmp_path / "model.safetensors", stable_diffusion_vae(tiny))
    x = np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    p64 = {k: v.astype(np.float64) for k, v in weights.items()}
    mean, image = vae_reference(p64, x.astype(np.float64), **TINY_VAE)
    _close(vae.encode(x).mean, mean)
    _close(vae.decode(np.asarray(vae.encode(x).mean)), image)
    assert {a.dtype for a in jax.tree.leaves(nnx.state(vae, nnx.Param))} == {np.dtype(np.float32)}


def test_a_file_that_does_not_fit_gives_one_clear_error(tiny, tmp_path):
    good = random_weights(vae_tensors(**TINY_VAE), seed=4)
    bad = dict(good)
    del bad["decoder.conv_out.bias"]
    bad["decoder.extra.weight"] = np.zeros(3, np.float32)
    bad["encoder.conv_in.weight"] = np.zeros((32, 4, 3, 3), np.float32)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(DiffusersWeightsError) as err:
        load_diffusers_vae(tmp_path / "bad.safetensors", stable_diffusion_vae(tiny))
    message = str(err.value)
    assert "1 tensors of the file have no place: decoder.extra.weight" in message
    assert "1 module parameters are not in the file: decoder.conv_out.bias" in message
    assert "encoder.conv_in.weight: file (32, 4, 3, 3), module expects (32, 3, 3, 3)" in message
    # A U-Net file given for the VAE: every name is listed as out of place, none silently.
    unet_weights = random_weights(unet_tensors(**TINY_UNET), seed=5)
    save_file(unet_weights, str(tmp_path / "unet.safetensors"))
    with pytest.raises(DiffusersWeightsError, match="module parameters are not in the file"):
        load_diffusers_vae(tmp_path / "unet.safetensors", stable_diffusion_vae(tiny))
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DiffusersWeightsError, match="not a readable safetensors file"):
        load_diffusers_vae(tmp_path / "corrupt.safetensors", stable_diffusion_vae(tiny))
    with pytest.raises(FileNotFoundError, match="no diffusers weights at"):
        load_diffusers_unet(tmp_path / "nowhere", stable_diffusion_unet(tiny))
