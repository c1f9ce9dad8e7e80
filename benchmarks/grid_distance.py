"""The distance grid=optimized fits in: pixels against the FID Inception features, on a trained digits DDPM.

For each distance, UniPC's grid and query levels at `--steps` are fitted with `optimize_grid` on `--fit-n` starting
points (seed 0) and the given budgets, with the sampler's x0 clipping as `generate` runs it; then `--n` images
(per-image noises (1, i), as in fid_samplers.py) are sampled on the fitted grid and scored: FID against the digits
training split, coupled RMSE to a fine solve (UniPC, 200 log-SNR steps) from the same noises, and the mean squared
distance of their Inception features to that solve's. The same is measured for diffusers' `--diffusers` row at
`--diffusers-nfe` NFE (default DPM++ 2M Karras at 20, fid_samplers.py's adapter) and the fine solve. Every cell is
also scored on `--subsets` disjoint consecutive blocks of its images (the same noises in every cell), so the table
shows how far a FID of n / subsets samples scatters and whether the order of two cells holds block by block.

    python benchmarks/grid_distance.py runs/train/<run>/checkpoints/last.ckpt --steps 10 --fit-n 32 \\
        --grid-evals 100 --query-evals 100 --n 1000 --subsets 5     # about 40 minutes on one CPU thread
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fid_samplers import (  # noqa: E402
    INCEPTION, REFERENCE_STEPS, SEED, block_fids, coupled_rmse, feature_fid, reference_stats, run_diffusers)

from difflab.lit.checkpoint import load_module  # noqa: E402
from difflab.metrics.inception import InceptionFeatures  # noqa: E402
from difflab.samplers import SamplerSpec, generate  # noqa: E402
from difflab.metrics.inception import grid_embed  # noqa: E402
from difflab.samplers.generate import CountingDenoiser  # noqa: E402
from difflab.samplers.grids import optimize_grid  # noqa: E402

generate_module = importlib.import_module("difflab.samplers.generate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fit-n", type=int, default=32)
    p.add_argument("--grid-evals", type=int, default=100)
    p.add_argument("--query-evals", type=int, default=100)
    p.add_argument("--n", type=int, default=1000, help="images sampled and scored per row")
    p.add_argument("--subsets", type=int, default=5, help="disjoint blocks of n / subsets images, each scored too")
    p.add_argument("--diffusers", default="dpmpp_2m@karras", help="diffusers' row (benchmarks/samplers.py names)")
    p.add_argument("--diffusers-nfe", type=int, default=20)
    p.add_argument("--inception", type=Path, default=INCEPTION)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "grid_distance.md")
    args = p.parse_args()
    if not args.ckpt.is_file() or not args.inception.is_file():
        p.error(f"need an existing checkpoint and Inception weights: {args.ckpt}, {args.inception}")
    if not 1 <= args.subsets <= args.n // 2:
        p.error(f"--subsets must be between 1 and n / 2 = {args.n // 2}")
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    module = load_module(args.ckpt, use_ema=True).eval()
    net = InceptionFeatures(str(args.inception), download=False).eval()
    features = grid_embed(SamplerSpec("unipc", grid_distance="inception", grid_inception=str(args.inception)),
                          module.latent_shape, torch.device("cpu"))  # the fit's own features, also FID's
    ref = reference_stats(net, module.image_shape[-1], None)
    block = args.n // args.subsets
    fine = module.sampling_spec(SamplerSpec("unipc", REFERENCE_STEPS, grid="logsnr"))
    fine_images = generate(module.denoiser, module.scheduler, fine, n=args.n, shape=module.latent_shape, seed=SEED,
                           batch_size=250)[0]
    fine_features = features(fine_images)
    blocks: dict[str, list[float]] = {}

    def row(label: str, images: Tensor, feats: Tensor, fit: str) -> str:
        blocks[label] = block_fids(feats[: block * args.subsets], ref, args.subsets)
        dist = float(((feats - fine_features) ** 2).sum(1).mean())
        line = (f"| {label} | {feature_fid(feats, ref):.2f} | {' / '.join(f'{v:.2f}' for v in blocks[label])} | "
                f"{coupled_rmse(images, fine_images):.4f} | {dist:.2f} | {fit} |")
        print(line, f"{time.perf_counter() - t0:.0f} s", flush=True)
        return line

    rows = [row(f"fine solve (UniPC, {REFERENCE_STEPS} log-SNR steps)", fine_images, fine_features, "–")]
    theirs = f"diffusers {args.diffusers}, NFE {args.diffusers_nfe}"
    images = run_diffusers(module, args.diffusers, args.diffusers_nfe, args.n, argparse.Namespace(batch_size=250))[0]
    rows.append(row(theirs, images, features(images), "–"))
    for distance, embed in (("pixel", None), ("inception", features)):
        spec = module.sampling_spec(SamplerSpec("unipc", args.steps, grid="optimized", grid_distance=distance,
                                                 grid_inception=str(args.inception)))
        start = time.perf_counter()
        fitted = optimize_grid(CountingDenoiser(module.denoiser, spec.clip_denoised, spec.dynamic_percentile),
                               spec.scheduler_for(module.scheduler), "unipc", args.steps, spec.knobs,
                               module.latent_shape, n=args.fit_n, seed=0, max_evals=args.grid_evals,
                               query_evals=args.query_evals, embed=embed)
        fit = f"{time.perf_counter() - start:.0f} s"
        generate_module.cached_optimized_grid = lambda *a, fitted=fitted, **k: fitted  # sample on this fit
        images = generate(module.denoiser, module.scheduler, spec, n=args.n, shape=module.latent_shape, seed=SEED,
                          batch_size=250, embed=embed)[0]
        rows.append(row(f"UniPC {args.steps} steps, fitted in {distance}", images, features(images), fit))
    ours = f"UniPC {args.steps} steps, fitted in inception"
    diffs = [a - b for a, b in zip(blocks[ours], blocks[theirs])]
    lower = sum(d <= 0 for d in diffs)
    command = (f"python benchmarks/grid_distance.py <ckpt> --steps {args.steps} --fit-n {args.fit_n} --grid-evals "
               f"{args.grid_evals} --query-evals {args.query_evals} --n {args.n} --subsets {args.subsets} "
               f"--diffusers {args.diffusers} --diffusers-nfe {args.diffusers_nfe}")
    text = "\n".join([
        f"# grid=optimized fitted in pixels or in Inception features ({args.n} samples per row)", "",
        f"Checkpoint: `{args.ckpt}`. Command: `{command}` ({time.perf_counter() - t0:.0f} s).",
        f"Reference: the digits training split ({int(ref.meta['count'])} images); per-image noises (seed {SEED}, i) "
        f"shared by every row; blocks: FID of images {block}k to {block}(k+1) - 1, k = 0..{args.subsets - 1}.", "",
        f"| row | FID ({args.n}) | FID of the {args.subsets} blocks of {block} | coupled RMSE | Inception feature "
        "distance to the fine solve | fit |",
        "|---|---:|---|---:|---:|---:|", *rows, "",
        f"{ours} minus {theirs}, block by block: {' / '.join(f'{d:+.2f}' for d in diffs)} (no worse in {lower} of "
        f"{args.subsets})."])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
