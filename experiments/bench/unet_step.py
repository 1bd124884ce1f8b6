"""Train-step throughput of zoo's DDPM U-Net, beside diffusers' UNet2DModel in PyTorch.

    PYTHONPATH=. python3 experiments/bench/unet_step.py --batch 16 --dtype float32 \
        --attention full,chunked,dot_product --steps 20 --warmup 3

The model is the small CIFAR U-Net that PyTorch examples use: 32x32x3, ch 64,
ch_mult (1, 2, 2) (channels 64, 128, 128), 2 res blocks per level, attention at
16x16 and in the middle block, dropout 0, ~6.47 M parameters. The step is the
real one: ``zoo.diffusion.objective.build_objective`` (epsilon-prediction DDPM
loss, t ~ U{0..999}, linear betas) trained by ``zoo.engine.step.build_train_step``
with AdamW (lr 2e-4, weight decay 0.01), jitted with the state donated. Timing:
``--warmup`` steps, then the median of ``--steps`` steps, each waited for
(``step_ms_median``, what ``images_per_s`` and MFU use), then ``--steps`` more
back to back with one wait at the end (``step_ms_pipelined``: host dispatch
overlapped with the device, as in a training loop that does not sync).
When torch and diffusers import, the same step of diffusers' UNet2DModel runs
on the same device (``diffusers_step.py``) and ``ratio`` = zoo / torch images/s.

FLOPs: ``model_flops_per_step`` counts the matmuls and convolutions of the
train step's jaxpr (forward + backward, attention="full"; ``jaxpr_flops.py``),
the implementation-independent count MFU is reported against (it equals a
hand count, 3 x 3.17 GFLOP forward per image). Each run also reports XLA's
``cost_analysis()`` flops of its executable, XLA's own accounting (elementwise
work in, convolution gradients counted its way, rematerialisation of
"chunked" in, cuDNN custom calls of "dot_product" on GPU out). MFU = model
FLOPs / median step time / the card's dense bf16 peak (GPU only; unknown cards
give null).

``--heads`` applies to both models: 1 (default) is DDPM's and zoo's; diffusers'
own default is 16 heads of dim 8 at these 128 channels.

One JSON object goes to stdout, progress to stderr; on SIGTERM (``timeout``)
the object is printed with what was measured so far and ``"incomplete"``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

# JAX would otherwise take 75% of the GPU and leave torch too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
from zoo_step import bench_zoo, make_batch, model_flops, unet_config  # noqa: E402

from zoo.nn.attention import IMPLS  # noqa: E402

MODEL = dict(image=[32, 32, 3], ch=64, ch_mult=[1, 2, 2], num_res_blocks=2,
             attn_resolutions=[16], mid_attention=True, dropout=0.0)  # fmt: skip
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, matched
# in order against jax.devices()[0].device_kind.
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", 989e12),
    ("A100", 312e12),
)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_flops(device) -> float | None:
    if device.platform != "gpu":
        return None
    return next((peak for name, peak in PEAK_BF16 if name in device.device_kind), None)


def bench_torch(args, on_gpu: bool, out: dict) -> None:
    try:
        import diffusers  # noqa: F401
        import torch
    except Exception as e:  # noqa: BLE001 - optional comparison
        out["skipped"] = f"torch/diffusers not importable: {e!r}"
        return
    if on_gpu and not torch.cuda.is_available():
        out["skipped"] = "JAX runs on GPU but torch has no CUDA: not the same device"
        return
    from diffusers_step import bench_diffusers

    log("torch/diffusers ...")
    bench_diffusers(
        batch=args.batch,
        dtype=args.dtype,
        heads=args.heads,
        steps=args.steps,
        warmup=args.warmup,
        clip_ema=args.clip_ema,
        use_cuda=on_gpu,
        compile_model=args.torch_compile,
        channels_last=args.torch_channels_last,
        out=out,
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--attention",
        default="full,chunked,dot_product",
        help="comma-separated zoo attention implementations",
    )
    p.add_argument("--attention-chunk", type=int, default=64, help='queries per "chunked" chunk')
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="U-Net compute dtype (params stay float32); torch: bf16 autocast",
    )
    p.add_argument(
        "--heads",
        type=int,
        default=1,
        help="attention heads of both models (DDPM: 1; diffusers' default: 16)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    p.add_argument(
        "--clip-ema",
        action="store_true",
        help="both: grad-norm clip 1.0 and an EMA 0.9999 (the DDPM recipe)",
    )
    p.add_argument(
        "--remat",
        action="store_true",
        help="zoo: rematerialise every U-Net block (unet.remat); temp_bytes shows the saving",
    )
    p.add_argument(
        "--torch",
        choices=("auto", "off"),
        default="auto",
        help="auto: run the diffusers comparison when torch and diffusers import",
    )
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the diffusers UNet")
    p.add_argument("--torch-channels-last", action="store_true")
    args = p.parse_args(argv)
    unknown = set(args.attention.split(",")) - set(IMPLS) - {""}
    if unknown:
        p.error(f"--attention {sorted(unknown)}: choose from {IMPLS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    impls = [a for a in args.attention.split(",") if a]
    device = jax.devices()[0]
    peak = peak_flops(device)
    log(
        f"jax {jax.__version__} on {device.device_kind} ({device.platform}); "
        f"batch {args.batch} {args.dtype}"
    )
    result = {
        "bench": "unet_step",
        "device": {
            "platform": device.platform,
            "kind": device.device_kind,
            "count": jax.device_count(),
            "peak_bf16_flops": peak,
        },
        "versions": {"python": sys.version.split()[0], "jax": jax.__version__},
        "config": {**MODEL, **vars(args), "optimizer": "adamw lr 2e-4 wd 0.01"},
        "model_flops_per_step": None,
        "model_flops_method": "matmul+conv FLOPs of the train-step jaxpr, attention=full",
        "zoo": {},
        "torch": {},
    }
    printed = []

    def emit():
        if not printed:
            printed.append(True)
            summarize(result, peak)
            print(json.dumps(result, indent=1), flush=True)

    def stop(signum, frame):
        # SIGTERM (e.g. from `timeout`): print what was measured so far and exit at
        # once (an exception raised here could land in a GC callback and be lost).
        result["incomplete"] = f"stopped by signal {signum}"
        emit()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        batch = make_batch(args.batch)
        kw = dict(batch=args.batch, dtype=args.dtype, heads=args.heads, clip_ema=args.clip_ema)
        flops = model_flops(unet_config(**kw, attention="full"), batch)
        kw["remat"] = args.remat
        result["model_flops_per_step"] = flops
        for impl in impls:
            config = unet_config(**kw, attention=impl, attention_chunk=args.attention_chunk)
            out = result["zoo"][impl] = {}
            try:
                bench_zoo(config, batch, steps=args.steps, warmup=args.warmup, out=out)
            except Exception as e:  # noqa: BLE001 - keep the other implementations' numbers
                log(f"zoo {impl} failed: {e!r}")
                out["error"] = repr(e)
        if args.torch == "off":
            result["torch"]["skipped"] = "--torch off"
        else:
            try:
                bench_torch(args, device.platform == "gpu", result["torch"])
            except Exception as e:  # noqa: BLE001 - optional comparison
                log(f"torch failed: {e!r}")
                result["torch"]["error"] = repr(e)
    finally:
        emit()


def summarize(result: dict, peak: float | None) -> None:
    """Model TFLOP/s and MFU of every timed run, zoo / torch images per second, and
    whether the parameter counts agree (in place)."""
    zoo, torch_result, flops = result["zoo"], result["torch"], result["model_flops_per_step"]
    for r in [*zoo.values(), torch_result]:
        if flops and "step_ms_median" in r:
            r["model_tflops_per_s"] = flops / (r["step_ms_median"] / 1e3) / 1e12
            r["mfu"] = r["model_tflops_per_s"] * 1e12 / peak if peak else None
    timed = {k: r for k, r in zoo.items() if "images_per_s" in r}
    ok = "images_per_s" in torch_result
    result["ratio_zoo_over_torch"] = (
        {k: r["images_per_s"] / torch_result["images_per_s"] for k, r in timed.items()}
        if ok
        else None
    )
    zoo_params = next((r["params"] for r in zoo.values() if "params" in r), None)
    torch_params = torch_result.get("params")
    result["params"] = {"zoo": zoo_params, "torch": torch_params}
    result["params_match_within_1pct"] = (
        abs(torch_params - zoo_params) <= 0.01 * zoo_params if zoo_params and torch_params else None
    )


if __name__ == "__main__":
    main()
