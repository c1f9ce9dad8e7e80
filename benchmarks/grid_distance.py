"""The distance grid=optimized fits in: pixels against the FID Inception features, on a trained digits DDPM.

For each distance, UniPC's grid and query levels at `--steps` are fitted with `optimize_grid` on `--fit-n` starting
points (seed 0) and the given budgets, with the sampler's x0 clipping as `generate` runs it; then `--n` images
(per-image noises (1, i), as in fid_samplers.py) are sampled on the fitted grid and scored: FID against the digits
training split, coupled RMSE to a fine solve (UniPC, 200 log-SNR steps) from the same noises, and the mean squared
distance of their Inception features to that solve's.

    python benchmarks/grid_distance.py runs/train/<run>/checkpoints/last.ckpt --steps 10 --fit-n 32 \\
        --grid-evals 100 --query-evals 100          # about 25 minutes on one CPU thread
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fid_samplers import INCEPTION, REFERENCE_STEPS, SEED, coupled_rmse, fid, reference_stats  # noqa: E402

from difflab.lit.checkpoint import load_module  # noqa: E402
from difflab.metrics.inception import InceptionFeatures  # noqa: E402
from difflab.samplers import SamplerSpec, generate  # noqa: E402
from difflab.samplers.generate import CountingDenoiser, grid_embed  # noqa: E402
from difflab.samplers.grids import optimize_grid  # noqa: E402

generate_module = importlib.import_module("difflab.samplers.generate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--fit-n", type=int, default=32)
    p.add_argument("--grid-evals", type=int, default=100)
    p.add_argument("--query-evals", type=int, default=100)
    p.add_argument("--n", type=int, default=200, help="images sampled and scored per distance")
    p.add_argument("--inception", type=Path, default=INCEPTION)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "grid_distance.md")
    args = p.parse_args()
    if not args.ckpt.is_file() or not args.inception.is_file():
        p.error(f"need an existing checkpoint and Inception weights: {args.ckpt}, {args.inception}")
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    module = load_module(args.ckpt, use_ema=True).eval()
    net = InceptionFeatures(str(args.inception), download=False).eval()

    features = grid_embed(SamplerSpec("unipc", grid_distance="inception", grid_inception=str(args.inception)),
                          module.latent_shape, torch.device("cpu"))  # the fit's own distance, also for the scores
    ref = reference_stats(net, module.image_shape[-1], None)
    fine = module.sampling_spec(SamplerSpec("unipc", REFERENCE_STEPS, grid="logsnr"))
    fine_images = generate(module.denoiser, module.scheduler, fine, n=args.n, shape=module.latent_shape, seed=SEED,
                           batch_size=250)[0]
    fine_features = features(fine_images)
    rows = [f"| fine solve (UniPC, {REFERENCE_STEPS} log-SNR steps) | {fid(net, fine_images.clamp(-1, 1), ref):.2f} "
            "| 0 | 0 | – |"]
    for distance, embed in (("pixel", None), ("inception", features)):
        spec = module.sampling_spec(SamplerSpec("unipc", args.steps, grid="optimized", grid_distance=distance,
                                                 grid_inception=str(args.inception)))
        start = time.perf_counter()
        fitted = optimize_grid(CountingDenoiser(module.denoiser, spec.clip_denoised, spec.dynamic_percentile),
                               spec.scheduler_for(module.scheduler), "unipc", args.steps, spec.knobs,
                               module.latent_shape, n=args.fit_n, seed=0, max_evals=args.grid_evals,
                               query_evals=args.query_evals, embed=embed)
        fit_s = time.perf_counter() - start
        generate_module.cached_optimized_grid = lambda *a, fitted=fitted, **k: fitted  # sample on this fit
        images = generate(module.denoiser, module.scheduler, spec, n=args.n, shape=module.latent_shape, seed=SEED,
                          batch_size=250)[0]
        dist = float(((features(images) - fine_features) ** 2).sum(1).mean())
        rows.append(f"| UniPC {args.steps} steps, fitted in {distance} | {fid(net, images.clamp(-1, 1), ref):.2f} | "
                    f"{coupled_rmse(images, fine_images):.4f} | {dist:.2f} | {fit_s:.0f} s |")
        print(rows[-1], flush=True)
    command = (f"python benchmarks/grid_distance.py <ckpt> --steps {args.steps} --fit-n {args.fit_n} --grid-evals "
               f"{args.grid_evals} --query-evals {args.query_evals} --n {args.n}")
    text = "\n".join([f"# grid=optimized fitted in pixels or in Inception features ({args.n} samples per row)", "",
                      f"Checkpoint: `{args.ckpt}`. Command: `{command}` ({time.perf_counter() - t0:.0f} s).", "",
                      "| row | FID | coupled RMSE | Inception feature distance to the fine solve | fit |",
                      "|---|---:|---:|---:|---:|", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
