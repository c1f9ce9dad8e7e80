"""Where along the sampling trajectory do broken samples leave the data range?

For each checkpoint, weights (EMA or raw), sampler and x0 clipping mode, draws n samples (the metric
seeds, seed * 2^20 + i) and records at every step, from the network's raw x0_hat (before any clipping):

    out     share of x0_hat pixels outside [-1, 1]
    max     mean over images of max |x0_hat|
    speckle mean speckle statistic of clamp(x0_hat) (see difflab.metrics.broken)

separately for the images that end up broken and those that end up clean, and the final broken rate
(thresholds from the digits validation split). The per-step table is printed at a few noise levels.

    python benchmarks/trajectory.py runs/train/<run>/checkpoints/last.ckpt --n 128
    python benchmarks/trajectory.py <ckpt> --samplers ddim:50 dpmpp_2m:20 ddpm:1000 --modes false true dynamic \
        --weights ema raw --out benchmarks/results/trajectory.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.data import DigitsDataModule
from difflab.lit.checkpoint import load_module
from difflab.metrics.broken import BrokenThresholds, image_stats
from difflab.samplers import SamplerSpec, generate

SHOWN_SIGMAS = (80.0, 20.0, 5.0, 1.0, 0.3, 0.1, 0.03)


def parse_mode(text: str) -> bool | str:
    return {"false": False, "true": True}.get(text, text)


def thresholds() -> BrokenThresholds:
    dm = DigitsDataModule(resolution=16)
    n = len(dm.split_dataset("val"))
    return BrokenThresholds.from_images((x for x, _ in dm.iter_images("val", 0, n, 500)), "val")


def run_one(module: Any, spec: SamplerSpec, n: int, limits: BrokenThresholds) -> dict[str, Any]:
    """Sample n images, recording the raw x0_hat statistics at every network evaluation."""
    steps: list[dict[str, Tensor]] = []
    denoiser = module.denoiser

    def recording(x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        x0 = denoiser(x, sigma, cond)
        steps.append({"sigma": sigma.reshape(-1)[0].double(), "out": (x0.abs() > 1).float().flatten(1).mean(1),
                      "max": x0.abs().flatten(1).amax(1), "speckle": image_stats(x0.clamp(-1, 1))["speckle"]})
        return x0

    t0 = time.perf_counter()
    images, nfe = generate(recording, module.scheduler, module.sampling_spec(spec), n=n, shape=module.latent_shape,
                           seed=1, batch_size=n)
    images = images.clamp(-1, 1)
    seconds = time.perf_counter() - t0
    flags = limits.broken(images)
    return {"images": images, "flags": flags, "steps": steps, "nfe": nfe, "seconds": seconds}


def summary_rows(result: dict[str, Any]) -> list[str]:
    """Per-step statistics at the grid points nearest SHOWN_SIGMAS, broken vs clean images."""
    broken = result["flags"]["broken"]
    sigmas = torch.stack([s["sigma"] for s in result["steps"]])
    rows = []
    for target in SHOWN_SIGMAS:
        i = int((sigmas.log() - torch.tensor(target).log()).abs().argmin())
        s = result["steps"][i]
        cells = []
        for mask in (broken, ~broken):
            if mask.any():
                cells.append(f"{s['out'][mask].mean():.3f} / {s['max'][mask].mean():.2f} / {s['speckle'][mask].mean():.3f}")
            else:
                cells.append("–")
        rows.append(f"| {float(s['sigma']):.3g} | {cells[0]} | {cells[1]} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--samplers", nargs="+", default=["ddim:50", "dpmpp_2m:20"])
    parser.add_argument("--modes", nargs="+", default=["false", "true", "dynamic"])
    parser.add_argument("--weights", nargs="+", default=["ema"], choices=["ema", "raw"])
    parser.add_argument("--detail", action="store_true", help="per-step tables (broken vs clean) for mode false")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    limits = thresholds()
    lines = ["| checkpoint | weights | sampler | clip_denoised | broken | solid | saturated | speckle | s |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    details: list[str] = []
    for ckpt in args.ckpts:
        for weights in args.weights:
            module = load_module(ckpt, use_ema=weights == "ema").eval()
            for sampler in args.samplers:
                name, steps = sampler.split(":")
                for mode in map(parse_mode, args.modes):
                    spec = SamplerSpec(name, int(steps), clip_denoised=mode, **({"eta": 0.0} if name == "ddim" else {}))
                    r = run_one(module, spec, args.n, limits)
                    f = {k: float(v.float().mean()) for k, v in r["flags"].items()}
                    line = (f"| {Path(ckpt).parent.parent.name}/{Path(ckpt).name} | {weights} | {sampler} | {mode} | "
                            f"{f['broken']:.1%} | {f['solid']:.1%} | {f['saturated']:.1%} | {f['speckle']:.1%} | {r['seconds']:.0f} |")
                    print(line, flush=True)
                    lines.append(line)
                    if args.detail and mode is False:
                        details += [f"\n{ckpt} ({weights}), {sampler}, no clipping: out / max / speckle of x0_hat",
                                    "| sigma | broken images | clean images |", "|---:|---|---|", *summary_rows(r)]
                        print("\n".join(details[-(len(SHOWN_SIGMAS) + 3):]), flush=True)
    text = "\n".join(lines + details) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
