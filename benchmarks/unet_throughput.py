"""Training throughput of difflab's UNet against diffusers' UNet2DModel at the same architecture.

One training step = forward + MSE loss + backward + AdamW step, on a fixed random batch. Trials
of the two models are interleaved (after a warm-up), in fp32 and under bf16 autocast, and the table
reports the median images/s over trials and the ratio difflab / diffusers.

Architecture mapping for ``--base-channels 64 --resolution 32`` (channel_mult (1, 2, 2), two res
blocks per level, attention at 16x16, 4 heads, scale-shift norm, 32 groups):

    difflab UNet(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                 attention_resolutions=(16,), num_heads=4, use_scale_shift_norm=True)
    diffusers UNet2DModel(block_out_channels=(64, 128, 128), layers_per_block=2,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                 mid_block_type="UNetMidBlock2D",
                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                 attention_head_dim=32, resnet_time_scale_shift="scale_shift",
                 attn_norm_num_groups=32, norm_num_groups=32)

``attn_norm_num_groups`` gives diffusers' middle attention its GroupNorm (it drops it by default
under scale-shift), so both networks have exactly the same parameter count.

    python benchmarks/unet_throughput.py                      # CPU defaults: batch 16, 32x32
    python benchmarks/unet_throughput.py --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.nets import UNet

Forward = Callable[[Tensor, Tensor], Tensor]


def parse_args() -> argparse.Namespace:
    """Command-line arguments; step/trial/batch defaults depend on the device."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: 16 on CPU, 128 on CUDA")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channels", type=int, default=3, help="image channels")
    p.add_argument("--base-channels", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="timed steps per trial (default: 2 CPU, 20 CUDA)")
    p.add_argument("--trials", type=int, default=None, help="trials per model and precision (default: 7 CPU, 5 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per model (default: 2 CPU, 10 CUDA)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated subset of fp32,bf16")
    p.add_argument("--channels-last", action="store_true", help="both models and inputs in channels_last")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    cuda = torch.device(args.device).type == "cuda"
    args.batch_size = args.batch_size or (128 if cuda else 16)
    args.steps = args.steps or (20 if cuda else 2)
    args.trials = args.trials or (5 if cuda else 7)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    return args


def build_models(args: argparse.Namespace) -> tuple[nn.Module, Forward, nn.Module, Forward]:
    """difflab UNet and diffusers UNet2DModel with the same channels, depth and attention placement."""
    from diffusers import UNet2DModel

    mult, attn_res = (1, 2, 2), (args.resolution // 2,)
    heads = 4
    ours = UNet(in_channels=args.channels, base_channels=args.base_channels, channel_mult=mult,
                num_res_blocks=2, attention_resolutions=attn_res, resolution=args.resolution,
                num_heads=heads, use_scale_shift_norm=True)
    theirs = UNet2DModel(
        sample_size=args.resolution, in_channels=args.channels, out_channels=args.channels,
        block_out_channels=tuple(args.base_channels * m for m in mult), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2D",
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=args.base_channels * mult[1] // heads, norm_num_groups=32,
        attn_norm_num_groups=32, resnet_time_scale_shift="scale_shift",
        flip_sin_to_cos=True, freq_shift=0, dropout=0.0,
    )
    return ours, ours, theirs, lambda x, t: theirs(x, t).sample


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_step(model: nn.Module, forward: Forward, device: torch.device, precision: str) -> Callable[..., None]:
    """A closure doing one training step (forward, MSE, backward, AdamW) on a given batch, in `precision`:
    fp32, bf16 (autocast) or fp16 (autocast with a gradient scaler, as Lightning's 16-mixed)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = AUTOCAST[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def step(x: Tensor, c_noise: Tensor, target: Tensor, *cond: Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            out = forward(x, c_noise, *cond)  # (B, C, H, W)
        loss = F.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return step


def timed(step: Callable[..., None], batch: tuple[Tensor, ...], steps: int, device: torch.device) -> float:
    """Images per second over `steps` training steps."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(*batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch[0].shape[0] / (time.perf_counter() - start)


def run_precision(models: dict[str, tuple[nn.Module, Forward]], bf16: bool, batch: tuple[Tensor, ...],
                  args: argparse.Namespace, device: torch.device) -> dict[str, list[float]]:
    """Warm up both models, then interleave timed trials (alternating order); images/s per trial."""
    steps = {name: make_step(m, fwd, device, "bf16" if bf16 else "fp32") for name, (m, fwd) in models.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step(*batch)
    names = list(steps)
    results: dict[str, list[float]] = {name: [] for name in names}
    for trial in range(args.trials):
        for name in names if trial % 2 == 0 else names[::-1]:
            results[name].append(timed(steps[name], batch, args.steps, device))
    return results


def main() -> None:
    """Build both networks, time them, print the table."""
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    ours, ours_fwd, theirs, theirs_fwd = build_models(args)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    models = {"difflab": (ours, ours_fwd), "diffusers": (theirs, theirs_fwd)}
    for model, _ in models.values():
        model.to(device=device, memory_format=fmt).train()
    shape = (args.batch_size, args.channels, args.resolution, args.resolution)
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)  # (B, C, H, W)
    c_noise = torch.rand(args.batch_size, device=device) * 999  # (B,)
    target = torch.randn(shape, device=device)  # (B, C, H, W)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"res={args.resolution} channels={args.channels} base={args.base_channels} "
          f"steps={args.steps} trials={args.trials} warmup={args.warmup} channels_last={args.channels_last}")
    print(f"parameters: difflab {n_ours:,}  diffusers {n_theirs:,}")
    print("img/s: median over trials; ratio = difflab / diffusers of the medians; "
          "paired = median of per-trial ratios; best = ratio of the fastest trials")
    print("| precision | difflab img/s | diffusers img/s | ratio | paired | best |")
    print("|---|---|---|---|---|---|")
    for precision in args.precisions.split(","):
        res = run_precision(models, precision == "bf16", (x, c_noise, target), args, device)
        ours_s, theirs_s = res["difflab"], res["diffusers"]
        a, b = statistics.median(ours_s), statistics.median(theirs_s)
        paired = statistics.median(o / t for o, t in zip(ours_s, theirs_s))
        best = max(ours_s) / max(theirs_s)
        print(f"| {precision} | {a:.1f} | {b:.1f} | {a / b:.3f} | {paired:.3f} | {best:.3f} |", flush=True)


if __name__ == "__main__":
    main()
