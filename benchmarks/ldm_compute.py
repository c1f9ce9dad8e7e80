"""Compute per training step: pixel-space DDPM vs latent diffusion at the same image size and UNet width.

LDM (Rombach et al. 2022) trains the diffusion UNet on f-times downsampled latents; the paper's
framing of the saving for f = 4 on 32x32 images is "16x less compute" (8x8 latents: 16x fewer
positions). This script measures, side by side on the same machine, one training step (denoising
loss forward + backward + AdamW step, `difflab.diffusion.DiffusionLoss` on the same UNet
configuration) of

    pixel:   UNet on x (B, C, R, R)
    latent:  the same UNet (in_channels = latent channels) on z (B, c, R/f, R/f); the frozen KL encoder's
             forward per step is measured separately (it is skipped with cached latents)

with FLOPs from `torch.utils.flop_counter.FlopCounterMode` (forward + backward) and the median wall
time over interleaved trials. Attention sits at the same relative depth in both (the second level).

    python benchmarks/ldm_compute.py                          # 32x32, f = 4, 4 latent channels, batch 16
    python benchmarks/ldm_compute.py --resolution 64 --out benchmarks/results/ldm_compute.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from difflab.diffusion import DiffusionLoss
from difflab.diffusion.precond import Denoiser
from difflab.diffusion.schedules import DiscreteVPScheduler
from difflab.nets import KLAutoencoder, UNet


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--f", type=int, default=4, help="downsampling factor of the autoencoder")
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--base-channels", type=int, default=64, help="UNet width (the same for both)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="timed steps per trial")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the markdown table here")
    return p.parse_args()


def unet(in_channels: int, resolution: int, base: int) -> UNet:
    """channel_mult (1, 2, 2), 2 ResBlocks per level, attention at the second level (resolution / 2)."""
    return UNet(in_channels=in_channels, base_channels=base, channel_mult=(1, 2, 2), num_res_blocks=2,
                attention_resolutions=(resolution // 2,), resolution=resolution, num_heads=4)


class Setup:
    """One model's training step on a fixed batch."""

    def __init__(self, name: str, net: UNet, x0: torch.Tensor) -> None:
        self.name, self.x0 = name, x0
        self.denoiser = Denoiser(net, DiscreteVPScheduler())
        self.loss = DiffusionLoss()
        self.opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        self.params = sum(p.numel() for p in net.parameters())
        self.times: list[float] = []

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.denoiser, self.x0, None).mean().backward()
        self.opt.step()

    def flops(self) -> int:
        """Forward + backward FLOPs of one step (the optimizer's elementwise work is not counted)."""
        with FlopCounterMode(display=False) as counter:
            self.loss(self.denoiser, self.x0, None).mean().backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    r, f, b = args.resolution, args.f, args.batch_size
    x = torch.rand(b, args.channels, r, r) * 2 - 1
    levels = {2: (1, 2), 4: (1, 2, 2), 8: (1, 2, 4, 4)}[f]
    encoder = KLAutoencoder(args.channels, args.latent_channels, base_channels=64, channel_mult=levels, resolution=r).eval()
    with torch.no_grad():
        z = encoder.encode(x).sample()
    setups = [Setup("pixel DDPM", unet(args.channels, r, args.base_channels), x),
              Setup(f"LDM (f={f}, c={args.latent_channels})", unet(args.latent_channels, r // f, args.base_channels), z)]
    flops = {s.name: s.flops() for s in setups}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder.encode(x).sample()
    encode_flops = counter.get_total_flops()
    encode_times: list[float] = []
    for s in setups:  # warm-up
        s.step()
    for _ in range(args.trials):  # interleaved trials
        for s in setups:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s.step()
            s.times.append((time.perf_counter() - t0) / args.steps)
        t0 = time.perf_counter()
        with torch.no_grad():
            encoder.encode(x).sample()
        encode_times.append(time.perf_counter() - t0)
    write_report(args, setups, flops, encode_flops, statistics.median(encode_times), x.shape, z.shape)


def write_report(args: argparse.Namespace, setups: list[Setup], flops: dict[str, int], encode_flops: int,
                 encode_time: float, x_shape: torch.Size, z_shape: torch.Size) -> None:
    pixel, latent = setups
    t_pixel, t_latent = (statistics.median(s.times) for s in setups)
    lines = [
        f"# Pixel DDPM vs LDM: compute per training step ({args.resolution}x{args.resolution}, f={args.f}, "
        f"UNet width {args.base_channels}, batch {args.batch_size})",
        "",
        f"`python benchmarks/ldm_compute.py --resolution {args.resolution} --f {args.f} --latent-channels "
        f"{args.latent_channels} --base-channels {args.base_channels} --batch-size {args.batch_size} --trials "
        f"{args.trials} --steps {args.steps}{f' --threads {args.threads}' if args.threads else ''}` on "
        f"{torch.get_num_threads()} CPU thread(s), torch {torch.__version__}; median of {args.trials} interleaved trials.",
        "",
        "| model | UNet input | UNet params | GFLOPs / step (fwd+bwd) | s / step |",
        "|---|---|---:|---:|---:|",
        f"| {pixel.name} | {tuple(x_shape)} | {pixel.params / 1e6:.2f} M | {flops[pixel.name] / 1e9:.2f} | {t_pixel:.3f} |",
        f"| {latent.name} | {tuple(z_shape)} | {latent.params / 1e6:.2f} M | {flops[latent.name] / 1e9:.2f} | {t_latent:.3f} |",
        f"| + frozen KL encoder (no grad; 0 with cached latents) | {tuple(x_shape)} | - | {encode_flops / 1e9:.2f} | {encode_time:.3f} |",
        "",
        f"- FLOPs ratio pixel / latent (UNet step): **{flops[pixel.name] / flops[latent.name]:.1f}x**; "
        f"with the encoder forward every step: {flops[pixel.name] / (flops[latent.name] + encode_flops):.1f}x",
        f"- Wall-time ratio pixel / latent (UNet step): **{t_pixel / t_latent:.1f}x**; with the encoder: "
        f"{t_pixel / (t_latent + encode_time):.1f}x",
        f"- Paper's claim (LDM, f = {args.f}): {args.f ** 2}x fewer spatial positions "
        f"({args.resolution}x{args.resolution} -> {args.resolution // args.f}x{args.resolution // args.f}); "
        "\"16x less compute\" for f = 4.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
