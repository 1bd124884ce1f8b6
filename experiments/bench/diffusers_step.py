"""The PyTorch reference train step: diffusers' ``UNet2DModel`` with torch AdamW.

The same step as zoo's: x0 ``[B, 3, 32, 32]`` in [-1, 1], t ~ U{0..999}, eps ~
N(0, I), x_t from the linear-beta (1e-4..0.02) schedule, MSE(model(x_t, t), eps),
one AdamW update (lr 2e-4, weight decay 0.01; optionally grad-norm clip 1 and an
EMA, as zoo's ``--clip-ema``). ``bfloat16`` is autocast (float32 weights and
optimizer, bf16 matmuls/convs), the counterpart of zoo's float32 params + bf16
compute dtype. torch and diffusers are imported here only; neither is a
dependency of zoo.
"""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import version

from timing import record_times


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_unet(heads: int):
    """diffusers' UNet2DModel at ch 64, mults (1, 2, 2), attention at 16x16 and mid."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        # Attention runs at 128 channels; diffusers' default (8) is 16 heads of dim 8.
        attention_head_dim=128 // heads,
    )


def bench_diffusers(
    *,
    batch: int,
    dtype: str,
    heads: int,
    steps: int,
    warmup: int,
    clip_ema: bool,
    use_cuda: bool,
    compile_model: bool = False,
    channels_last: bool = False,
    out: dict,
) -> None:
    """Times the diffusers train step, filling the JSON-able ``out`` as it goes."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if use_cuda else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    else:
        # XLA runs float32 convs/matmuls in TF32 on Ampere+ by default; match it.
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_unet(heads).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    out.update(
        library=f"torch {torch.__version__}, diffusers {version('diffusers')}",
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        threads=torch.get_num_threads(),
        precision="bf16 autocast, fp32 weights" if dtype == "bfloat16" else "fp32 (TF32 on GPU)",
        attention_heads=heads,
        torch_compile=compile_model,
        channels_last=channels_last,
        params=sum(p.numel() for p in model.parameters()),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    ema = [p.detach().clone() for p in model.parameters()] if clip_ema else None
    forward = torch.compile(model) if compile_model else model

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).float().to(device)
    x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        t = torch.randint(0, 1000, (batch,), device=device)
        eps = torch.randn_like(x0)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with autocast:
            pred = forward(xt, t).sample
        loss = F.mse_loss(pred.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_ema:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if clip_ema:
            with torch.no_grad():
                torch._foreach_lerp_(ema, list(model.parameters()), 1 - 0.9999)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # torch's own count of one step (matmuls, convs, SDPA; forward + backward), a
    # cross-check of the jaxpr count. On CPU it misses the fused SDPA kernel
    # (2.7 GFLOP of 152 at batch 16); under a first torch.compile call it is unreliable.
    if not compile_model:
        try:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                step()
            sync()
            out["flop_counter_flops_per_step"] = int(counter.get_total_flops())
        except Exception as e:  # noqa: BLE001 - a cross-check only
            log(f"torch flop counter failed: {e!r}")

    t0 = time.perf_counter()
    step()
    sync()
    out["first_step_s"] = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
        record_times(out, times, batch)
        log(f"  torch step {i}: {1e3 * times[-1]:.1f} ms")
    out["final_loss"] = float(loss.detach())
    if device.type == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    t0 = time.perf_counter()  # back to back, one synchronisation at the end
    for _ in range(steps):
        step()
    sync()
    out["step_ms_pipelined"] = 1e3 * (time.perf_counter() - t0) / steps
