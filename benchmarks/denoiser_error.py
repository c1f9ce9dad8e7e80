"""Denoising error per noise level of trained checkpoints: where along sigma does a model fail?

For held-out images x0 and noise levels sigma, reports E ||D(x0 + sigma eps, sigma) - x0||^2 per pixel
(the x0-space error, comparable across schedulers in difflab's sigma view) next to the error of the
best constant prediction (the per-pixel data mean), with the EMA weights.

    python benchmarks/denoiser_error.py runs/train/<a>/checkpoints/last.ckpt runs/train/<b>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.lit.checkpoint import load_module

SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 50.0)


def errors(ckpt: str, n: int, seed: int) -> tuple[str, dict[float, float], dict[float, float]]:
    """(scheduler, {sigma: model error}, {sigma: mean-predictor error}) of a checkpoint's EMA weights."""
    module = load_module(ckpt)
    data = instantiate(OmegaConf.create(module.run_config["data"]))
    return module_errors(module, data, n, seed)


@torch.no_grad()
def module_errors(module, data, n: int, seed: int) -> tuple[str, dict[float, float], dict[float, float]]:
    """The same for a DiffusionModule in memory and its data module."""
    x0 = torch.cat([x for x, _ in data.iter_images("val", 0, n, 64)])
    mean = x0.mean(0, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen)
    model, trivial = {}, {}
    for sigma in SIGMAS:
        d = module.denoiser(x0 + sigma * eps, torch.full((len(x0),), sigma, dtype=torch.float64))
        model[sigma] = float(((d - x0) ** 2).mean())
        trivial[sigma] = float(((mean - x0) ** 2).mean())
    return repr(module.scheduler), model, trivial


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpts", nargs="+")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = [errors(c, args.n, args.seed) for c in args.ckpts]
    print("| sigma | " + " | ".join(f"{i}: {name.split('(')[0]}" for i, (name, _, _) in enumerate(rows)) + " | mean predictor |")
    print("|---" * (len(rows) + 2) + "|")
    for sigma in SIGMAS:
        cells = " | ".join(f"{r[1][sigma]:.4f}" for r in rows)
        print(f"| {sigma:g} | {cells} | {rows[0][2][sigma]:.4f} |")
    for i, (name, _, _) in enumerate(rows):
        print(f"{i}: {args.ckpts[i]}  {name}")


if __name__ == "__main__":
    main()
