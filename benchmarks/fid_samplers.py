"""FID versus NFE on a trained digits DDPM: the best difflab samplers and grids against diffusers' schedulers.

Every cell samples `--n` images from the same checkpoint (EMA weights) with the same per-image noises (seed, i)
and scores them against the Inception statistics of the digits training split (1,617 real images, 16x16,
upsampled by the Inception pipeline) with the shared FID Inception weights (`--inception`, default
`../shared/assets/inception/inception_fid_trunk.pth`, read through difflab's metrics code). FID of a few hundred
samples is biased upwards (the bias shrinks like 1/n): compare cells within one table only, never with FIDs of
other sample counts or papers.

difflab rows run `generate` with the checkpoint's scheduler and the sampler's `clip_denoised=auto` (x0_hat
clamped to [-1, 1] for this pixel model); `@optimized` rows fit grid=optimized to this network first (cached beside the
checkpoint, `grids/<ckpt>-<sha>/`), in pixels or, with `--grid-distance inception`, in the Inception features FID
uses (written to fid_samplers_inception.md / .png). diffusers rows run diffusers' scheduler loop on the same network
through the eps adapter of `benchmarks/samplers.py` (x_t -> x = x_t / sqrt(alpha_bar), D(x, sigma) with the same x0
clipping, eps = (x - D) / sigma), starting from the same noises. NFE counts actual network calls per image.

    python benchmarks/fid_samplers.py runs/train/<run>/checkpoints/last.ckpt            # n = 500, NFE 5 10 20
    python benchmarks/fid_samplers.py <ckpt> --n 200 --nfe 10 20 --recipe "python train.py (default), 2000 steps"
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from samplers import difflab_plan, make_diffusers, row_sampler, vp_eps_model  # noqa: E402  (the mixture benchmark's adapters)

from difflab.data import DigitsDataModule  # noqa: E402
from difflab.lit.checkpoint import load_module  # noqa: E402
from difflab.metrics.fidelity import ReferenceStats, fidelity_scores  # noqa: E402
from difflab.metrics.inception import InceptionFeatures, grid_embed  # noqa: E402
from difflab.samplers import SamplerSpec, StackedGenerator, generate, sample_seeds  # noqa: E402
from difflab.samplers.generate import CountingDenoiser  # noqa: E402
from difflab.samplers.grids import checkpoint_grid_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INCEPTION = REPO.parent / "shared" / "assets" / "inception" / "inception_fid_trunk.pth"
DIFFLAB_ROWS = ("unipc@optimized", "unipc_bh1@optimized", "dpmpp_3m@optimized", "unipc@logsnr", "dpmpp_2m@karras")
DIFFUSERS_ROWS = ("unipc@leading", "unipc2_bh1@leading", "dpmpp_3m@leading", "deis3@leading", "dpmpp_2m@karras")
SEED = 1  # the per-image noises of every cell: (SEED, i)


def reference_stats(extractor: InceptionFeatures, resolution: int, limit: int | None) -> ReferenceStats:
    """Inception statistics of the digits training split (its first `limit` images when given: smoke runs)."""
    dm = DigitsDataModule(resolution=resolution)
    n = min(len(dm.split_dataset("train")), limit or 10**9)
    feats = [extractor(x)[0] for x, _ in dm.iter_images("train", 0, n, 250)]
    return ReferenceStats.from_features(torch.cat(feats), {"dataset": "digits", "split": "train"})


def fid(extractor: InceptionFeatures, images: Tensor, ref: ReferenceStats) -> float:
    """FID of images [n, C, H, W] in [-1, 1] against the reference."""
    feats = torch.cat([extractor(images[i : i + 250])[0] for i in range(0, len(images), 250)])
    return feature_fid(feats, ref)


def feature_fid(features: Tensor, ref: ReferenceStats) -> float:
    """FID of Inception pool features [n, 2048] against the reference."""
    return fidelity_scores(features, features, ref, kid=False, inception_score=False)["fid"]  # logits unused


REFERENCE_STEPS = 200  # the fine solve the coupled errors are measured against


def coupled_rmse(images: Tensor, fine: Tensor) -> float:
    """sqrt(mean over images and pixels of (x - x_fine)^2): the discretisation error from the same noises."""
    return float(((images.double() - fine.double()) ** 2).mean().sqrt()) if torch.isfinite(images).all() else math.nan


def error_table(errors: dict[str, dict[int, float]], nfes: list[int], fine_fid: float) -> str:
    """Markdown: each cell's coupled RMSE to the fine solve from the same noises, and that solve's FID."""
    lines = ["", f"Coupled RMSE (per pixel, images in [-1, 1]) to the fine ODE solve from the same noises (UniPC, "
             f"{REFERENCE_STEPS} log-SNR steps, FID {fine_fid:.2f}):", "",
             "| sampler@grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for row, cells in errors.items():
        lines.append(f"| {row} | " + " | ".join(f"{cells[k]:.4f}" if k in cells else "–" for k in nfes) + " |")
    return "\n".join(lines + [""])


def run_difflab(module: Any, ckpt: Path, row: str, nfe: int, n: int, args: argparse.Namespace) -> tuple[Tensor, int]:
    """n images of one difflab sampler@grid at an NFE budget, and the evaluations per image."""
    label, grid = row.split("@")
    name = row_sampler(label)[0]
    steps, knobs = difflab_plan(label, nfe)
    spec = module.sampling_spec(SamplerSpec(name, steps, grid=grid, grid_effort=args.grid_effort,
                                            grid_distance=args.grid_distance, grid_inception=str(args.inception),
                                            **knobs))
    embed = grid_embed(spec, module.latent_shape, torch.device("cpu")) if grid == "optimized" else None
    return generate(module.denoiser, module.scheduler, spec, n=n, shape=module.latent_shape, seed=SEED,
                    batch_size=args.batch_size, grid_cache=checkpoint_grid_cache(ckpt), embed=embed)  # optimized: fitted, cached


def run_diffusers(module: Any, row: str, nfe: int, n: int, args: argparse.Namespace) -> tuple[Tensor, int]:
    """n images of diffusers' scheduler loop on the same network and noises, and the evaluations per image."""
    name, grid = row.split("@")
    spec = module.sampling_spec(SamplerSpec("ddim", nfe))  # only for its clip_denoised mode
    clipped = CountingDenoiser(module.denoiser, spec.clip_denoised, spec.dynamic_percentile)
    out, calls = [], 0
    for start in range(0, n, args.batch_size):
        b = min(args.batch_size, n - start)
        z = StackedGenerator(sample_seeds(SEED, b, start)).randn((b, *module.latent_shape))  # generate's x_T / std
        sched = make_diffusers(name, grid)
        sched.set_timesteps((nfe + 1) // 2 if name in ("heun", "dpmpp_sde") else nfe)
        eps_model = vp_eps_model(sched.alphas_cumprod, lambda x, s, c=None: clipped(x.float(), s))
        x = z * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.step(eps_model(sched.scale_model_input(x, t), t), t, x).prev_sample
            calls += 1 if start == 0 else 0
        out.append(x.float())
    return torch.cat(out), calls


def report(fids: dict[str, dict[int, tuple[float, int]]], args: argparse.Namespace, ckpt: Path, seconds: float,
           ref_count: int) -> str:
    """Markdown: the recipe and settings, the goal line and the FID table."""
    nfes = args.nfe
    ref_opt = f" --ref-n {args.ref_n}" if args.ref_n else ""
    command = (f"python benchmarks/fid_samplers.py <ckpt> --n {args.n} --nfe {' '.join(map(str, nfes))} "
               f"--grid-effort {args.grid_effort:g} --grid-distance {args.grid_distance}{ref_opt}")
    lines = [f"# FID versus NFE on the digits DDPM ({args.n} samples per cell)", "",
             f"Checkpoint: `{ckpt}` (recipe: {args.recipe}). Command: `{command}` ({seconds:.0f} s).",
             f"Reference: the digits training split ({ref_count} images); EMA weights; per-image noises (seed {SEED}, i)",
             f"shared by every cell. FID of {args.n} samples is biased upwards: compare within this table only.", "",
             "| sampler@grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for row, cells in fids.items():
        lines.append(f"| {row} | " + " | ".join(
            f"{cells[k][0]:.2f}" + (f" ({cells[k][1]})" if cells[k][1] != k else "") if k in cells else "–"
            for k in nfes) + " |")
    if 10 in nfes and 20 in nfes:
        ours = min((c[10][0], r) for r, c in fids.items() if "[difflab]" in r and 10 in c and c[10][1] <= 10)
        theirs = min((c[20][0], r) for r, c in fids.items() if "[diffusers]" in r and 20 in c and c[20][1] <= 20)
        verdict = "met" if ours[0] <= theirs[0] else "not met"
        lines += ["", f"Goal (difflab's best at NFE 10 no worse than diffusers' best at NFE 20): {verdict}; "
                  f"{ours[0]:.2f} ({ours[1]}) against {theirs[0]:.2f} ({theirs[1]})."]
    return "\n".join(lines + [""])


def plot(fids: dict[str, dict[int, tuple[float, int]]], nfes: list[int], path: Path) -> None:
    """FID against NFE, difflab solid, diffusers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for row, cells in fids.items():
        ks = [k for k in nfes if k in cells]
        ax.plot(ks, [cells[k][0] for k in ks], "--" if "diffusers" in row else "-", marker="o", label=row)
    ax.set(xscale="log", xlabel="NFE (network calls per image)", ylabel="FID", title="Digits DDPM: FID versus NFE")
    ax.set_xticks(nfes, [str(k) for k in nfes])
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("--n", type=int, default=500, help="samples per cell")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--difflab", nargs="*", default=list(DIFFLAB_ROWS), help="sampler@grid rows")
    p.add_argument("--diffusers", nargs="*", default=list(DIFFUSERS_ROWS), help="rows of benchmarks/samplers.py")
    p.add_argument("--grid-effort", type=float, default=1.0,
                   help="sampler.grid_effort of the optimized rows (1: the library's search budget)")
    p.add_argument("--grid-distance", default="pixel", choices=["pixel", "inception"],
                   help="sampler.grid_distance of the optimized rows (inception: fitted in FID's feature space)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--ref-n", type=int, default=None, help="reference images (default: the whole training split)")
    p.add_argument("--inception", type=Path, default=INCEPTION)
    p.add_argument("--recipe", default="state it: the training command and its steps")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    if not args.ckpt.is_file() or not args.inception.is_file():
        p.error(f"need an existing checkpoint and Inception weights: {args.ckpt}, {args.inception}")
    return args


def main() -> None:
    """Every row at every NFE: sample, score, write the table and the plot."""
    args = parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    module = load_module(args.ckpt, use_ema=True).eval()
    extractor = InceptionFeatures(str(args.inception), download=False).eval()
    ref = reference_stats(extractor, module.image_shape[-1], args.ref_n)
    fine = module.sampling_spec(SamplerSpec("unipc", REFERENCE_STEPS, grid="logsnr"))  # the ODE solved finely
    fine_images = generate(module.denoiser, module.scheduler, fine, n=args.n, shape=module.latent_shape, seed=SEED,
                           batch_size=args.batch_size)[0]
    fine_fid = fid(extractor, fine_images.clamp(-1, 1), ref)
    print(f"reference solve (UniPC, {REFERENCE_STEPS} log-SNR steps): FID {fine_fid:.2f}", flush=True)
    fids: dict[str, dict[int, tuple[float, int]]] = {}
    errors: dict[str, dict[int, float]] = {}
    for side, rows in (("difflab", args.difflab), ("diffusers", args.diffusers)):
        for row in rows:
            for k in args.nfe:
                if side == "difflab":
                    images, calls = run_difflab(module, args.ckpt, row, k, args.n, args)
                else:
                    images, calls = run_diffusers(module, row, k, args.n, args)
                value = fid(extractor, images.clamp(-1, 1), ref) if torch.isfinite(images).all() else math.nan
                fids.setdefault(f"{row} [{side}]", {})[k] = (value, calls)
                errors.setdefault(f"{row} [{side}]", {})[k] = coupled_rmse(images, fine_images)
                print(f"{row} [{side}] NFE {k} ({calls}): FID {value:.2f}, coupled RMSE "
                      f"{errors[f'{row} [{side}]'][k]:.4f}  {time.perf_counter() - t0:.0f} s", flush=True)
    text = report(fids, args, args.ckpt, time.perf_counter() - t0, int(ref.meta["count"]))
    text += error_table(errors, args.nfe, fine_fid)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "fid_samplers" if args.grid_distance == "pixel" else f"fid_samplers_{args.grid_distance}"
    (args.out / f"{stem}.md").write_text(text)
    plot(fids, args.nfe, args.out / f"{stem}.png")
    print(text)


if __name__ == "__main__":
    main()
