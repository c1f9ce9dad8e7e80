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
import json
import math
import statistics
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
    return feature_fid(pool_features(extractor, images), ref)


def pool_features(extractor: InceptionFeatures, images: Tensor) -> Tensor:
    """Inception pool features [n, 2048] of images [n, C, H, W] in [-1, 1]."""
    return torch.cat([extractor(images[i : i + 250])[0] for i in range(0, len(images), 250)])


def block_fids(features: Tensor, ref: ReferenceStats, blocks: int) -> list[float]:
    """FID of each of `blocks` disjoint consecutive blocks of the features (the same noises in every cell)."""
    size = len(features) // blocks
    return [feature_fid(features[k * size : (k + 1) * size], ref) for k in range(blocks)]


def feature_fid(features: Tensor, ref: ReferenceStats) -> float:
    """FID of Inception pool features [n, 2048] against the reference."""
    return fidelity_scores(features, features, ref, kid=False, inception_score=False)["fid"]  # logits unused


REFERENCE_STEPS = 200  # the fine solve the coupled errors are measured against


def coupled_rmse(images: Tensor, fine: Tensor) -> float:
    """sqrt(mean over images and pixels of (x - x_fine)^2): the discretisation error from the same noises."""
    return float(((images.double() - fine.double()) ** 2).mean().sqrt()) if torch.isfinite(images).all() else math.nan


def run_difflab(module: Any, ckpt: Path, row: str, nfe: int, n: int, args: argparse.Namespace,
                seed: int = SEED) -> tuple[Tensor, int]:
    """n images of one difflab sampler@grid at an NFE budget (per-image noises (seed, i)), and the evaluations per
    image."""
    label, grid = row.split("@")
    name = row_sampler(label)[0]
    steps, knobs = difflab_plan(label, nfe)
    spec = module.sampling_spec(SamplerSpec(name, steps, grid=grid, grid_effort=args.grid_effort,
                                            grid_distance=args.grid_distance, grid_inception=str(args.inception),
                                            **knobs))
    embed = grid_embed(spec, module.latent_shape, torch.device("cpu")) if grid == "optimized" else None
    return generate(module.denoiser, module.scheduler, spec, n=n, shape=module.latent_shape, seed=seed,
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


Cells = dict[str, dict[int, dict[str, Any]]]  # row -> NFE -> {"calls", "rmse", and where scored "fid", "blocks"}


def best(cells: Cells, side: str, nfe: int, key: str) -> tuple[float, str]:
    """The lowest `key` of one side's rows at an NFE (only rows that spent at most nfe calls), and its row."""
    return min(((c[nfe][key], r) for r, c in cells.items() if f"[{side}]" in r and nfe in c and key in c[nfe]
                and c[nfe]["calls"] <= nfe and math.isfinite(c[nfe][key])), default=(math.nan, "none"))


def goals(cells: Cells, fine: dict[str, Any]) -> list[str]:
    """The solver goals: coupled RMSE of difflab's best at NFE 5 / 10 against diffusers' best at 10 / 20, and the
    FID of difflab's best at NFE 10 within one standard deviation of the fine solve's block FIDs."""
    out = []
    for mine, theirs in ((5, 10), (10, 20)):
        ours, other = best(cells, "difflab", mine, "rmse"), best(cells, "diffusers", theirs, "rmse")
        if math.isnan(ours[0]) or math.isnan(other[0]):
            continue
        verdict = "met" if ours[0] <= other[0] else "not met"
        out.append(f"- Coupled RMSE of difflab's best at NFE {mine} no larger than diffusers' best at NFE {theirs}: "
                   f"**{verdict}**; {ours[0]:.4f} ({ours[1]}) against {other[0]:.4f} ({other[1]}).")
    ours = best(cells, "difflab", 10, "fid")
    if not math.isnan(ours[0]) and len(fine["blocks"]) > 1:
        spread = statistics.stdev(fine["blocks"])
        gap = ours[0] - fine["fid"]
        diffs = [a - b for a, b in zip(cells[ours[1]][10]["blocks"], fine["blocks"])]
        verdict = "met" if gap <= spread else "not met"
        out.append(f"- FID of difflab's best at NFE 10 no more than one block standard deviation above the fine "
                   f"solve's: **{verdict}**; {ours[0]:.2f} ({ours[1]}) - {fine['fid']:.2f} = {gap:+.2f} against "
                   f"{spread:.2f} (the standard deviation of the fine solve's {len(fine['blocks'])} block FIDs); "
                   f"block by block: {' / '.join(f'{d:+.2f}' for d in diffs)}.")
    return out


def report(cells: Cells, fine: dict[str, Any], args: argparse.Namespace, seconds: float, ref_count: int) -> str:
    """Markdown: the recipe and settings, the goal lines, the coupled-error table and the FID table."""
    nfes = args.nfe
    command = (f"python benchmarks/fid_samplers.py <ckpt> --n {args.n} --blocks {args.blocks} --nfe "
               f"{' '.join(map(str, nfes))} --fid-nfe {' '.join(map(str, args.fid_nfe))} --difflab "
               f"{' '.join(args.difflab)} --diffusers {' '.join(args.diffusers)} --grid-effort {args.grid_effort:g} "
               f"--grid-distance {args.grid_distance}" + (f" --ref-n {args.ref_n}" if args.ref_n else ""))
    size = args.n // args.blocks

    def row_line(row: str, nfe_cells: dict[int, dict[str, Any]], key: str) -> str:
        def cell(k: int) -> str:
            c = nfe_cells.get(k)
            if c is None or key not in c:
                return "–"
            text = f"{c[key]:.4f}" if key == "rmse" else f"{c[key]:.2f} ({statistics.stdev(c['blocks']):.2f})"
            return text + (f" [{c['calls']} calls]" if c["calls"] != k else "")
        return f"| {row} | " + " | ".join(cell(k) for k in nfes) + " |"

    head = "| sampler@grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |\n" + "|---" + "|---:" * len(nfes) + "|"
    lines = [f"# Few-step solvers on the digits DDPM: discretisation error and FID ({args.n} samples per cell)", "",
             f"Checkpoint: `{args.ckpt}` (recipe: {args.recipe}). Command: `{command}` ({seconds:.0f} s, "
             f"{torch.get_num_threads()} torch threads).",
             f"Reference: the digits training split ({ref_count} images); EMA weights; per-image noises (seed {SEED}, i)"
             f" shared by every cell; blocks: images {size}k to {size}(k+1) - 1, k = 0..{args.blocks - 1}.",
             f"Fine solve (UniPC, {REFERENCE_STEPS} log-SNR steps): FID {fine['fid']:.2f}, blocks "
             f"{' / '.join(f'{v:.2f}' for v in fine['blocks'])}; its own discretisation error, the coupled RMSE of "
             f"the {REFERENCE_STEPS // 2}-step solve to it: {fine['check']:.5f}.", "", "## Goals", "",
             *goals(cells, fine), "", "## Coupled RMSE to the fine solve (per pixel, images in [-1, 1])", "", head]
    lines += [row_line(r, c, "rmse") for r, c in cells.items()]
    lines += ["", f"## FID ({args.n} samples; in parentheses the standard deviation of the {args.blocks} block FIDs "
              f"of {size})", "", head.replace("sampler@grid", "sampler@grid"),
              f"| fine solve (UniPC, {REFERENCE_STEPS} log-SNR steps) | "
              + " | ".join(f"{fine['fid']:.2f} ({statistics.stdev(fine['blocks']):.2f})" for _ in nfes) + " |"]
    lines += [row_line(r, c, "fid") for r, c in cells.items() if any("fid" in v for v in c.values())]
    return "\n".join(lines + [""])


def plot(cells: Cells, fine: dict[str, Any], nfes: list[int], path: Path) -> None:
    """Coupled RMSE and FID against NFE, difflab solid, diffusers dashed; the fine solve's FID and its block spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for row, nfe_cells in cells.items():
        style = "--" if "diffusers" in row else "-"
        ks = [k for k in nfes if k in nfe_cells]
        left.plot(ks, [nfe_cells[k]["rmse"] for k in ks], style, marker="o", label=row)
        ks = [k for k in ks if "fid" in nfe_cells[k]]
        if ks:
            right.errorbar(ks, [nfe_cells[k]["fid"] for k in ks], [statistics.stdev(nfe_cells[k]["blocks"]) for k in ks],
                           fmt=style + "o", capsize=3, label=row)
    spread = statistics.stdev(fine["blocks"])
    right.axhline(fine["fid"], color="k", lw=1, label=f"fine solve ({REFERENCE_STEPS} steps)")
    right.axhspan(fine["fid"] - spread, fine["fid"] + spread, color="k", alpha=0.1)
    left.set(xscale="log", yscale="log", xlabel="NFE (network calls per image)", ylabel="coupled RMSE to the fine solve",
             title="Discretisation error")
    right.set(xscale="log", xlabel="NFE (network calls per image)", ylabel="FID (error bars: block std)",
              title="FID")
    for ax in (left, right):
        ax.set_xlim(min(nfes) / 1.2, max(nfes) * 1.2)
        ax.set_xticks(nfes, [str(k) for k in nfes])
        ax.set_xticks([], minor=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BEGIN, END = "<!-- fid_samplers.py: begin -->", "<!-- fid_samplers.py: end -->"


def update_docs(page: Path, text: str, figure: Path) -> None:
    """Replace the part of `page` between the markers with the report (headings one level down) and the path of its
    plot (a file of this repository)."""
    body = page.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{page} has no {BEGIN} ... {END} section to regenerate")
    text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
    link = f"The plot of both, coupled RMSE and FID against NFE: `{figure.resolve().relative_to(REPO.resolve())}`."
    # a path, not an image link: the docs site is built from docs/ alone
    start, stop = body.index(BEGIN) + len(BEGIN), body.index(END)
    page.write_text(body[:start] + "\n" + text.strip() + "\n\n" + link + "\n" + body[stop:])


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("--n", type=int, default=1000, help="samples per cell")
    p.add_argument("--blocks", type=int, default=5, help="disjoint blocks of n / blocks samples, each scored too")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--fid-nfe", type=int, nargs="*", default=None,
                   help="the NFEs whose cells are also scored by FID (default: every NFE; the others: coupled RMSE)")
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
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "samplers.md",
                   help=f"the page whose {BEGIN} section is regenerated from the report ('-': none)")
    args = p.parse_args()
    args.fid_nfe = args.nfe if args.fid_nfe is None else args.fid_nfe
    if not args.ckpt.is_file() or not args.inception.is_file():
        p.error(f"need an existing checkpoint and Inception weights: {args.ckpt}, {args.inception}")
    if not 2 <= args.blocks <= args.n // 2:
        p.error(f"--blocks must be between 2 and n / 2 = {args.n // 2}")
    if not set(args.fid_nfe) <= set(args.nfe):
        p.error(f"--fid-nfe {' '.join(map(str, args.fid_nfe))}: each must be one of --nfe {' '.join(map(str, args.nfe))}")
    if not 0 < args.grid_effort <= 1000:
        p.error(f"--grid-effort {args.grid_effort:g} is outside (0, 1000] (sampler.grid_effort; 1 is the library's)")
    if str(args.docs) == "-":
        args.docs = None
    elif not args.docs.is_file() or BEGIN not in args.docs.read_text():
        p.error(f"--docs {args.docs} is not a page with a {BEGIN} ... {END} section (or pass --docs - for none)")
    return args


def main() -> None:
    """The fine solve, then every row at every NFE: sample, measure, score; write the tables, the plot, the page."""
    args = parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    module = load_module(args.ckpt, use_ema=True).eval()
    extractor = InceptionFeatures(str(args.inception), download=False).eval()
    ref = reference_stats(extractor, module.image_shape[-1], args.ref_n)

    def solve(steps: int) -> Tensor:
        spec = module.sampling_spec(SamplerSpec("unipc", steps, grid="logsnr"))  # the ODE solved finely
        return generate(module.denoiser, module.scheduler, spec, n=args.n, shape=module.latent_shape, seed=SEED,
                        batch_size=args.batch_size)[0]

    fine_images = solve(REFERENCE_STEPS)
    feats = pool_features(extractor, fine_images.clamp(-1, 1))
    fine = {"fid": feature_fid(feats, ref), "blocks": block_fids(feats, ref, args.blocks),
            "check": coupled_rmse(solve(REFERENCE_STEPS // 2), fine_images)}
    print(f"fine solve (UniPC, {REFERENCE_STEPS} log-SNR steps): FID {fine['fid']:.2f}, its {REFERENCE_STEPS // 2}-step"
          f" solve {fine['check']:.5f} from it  {time.perf_counter() - t0:.0f} s", flush=True)
    cells: Cells = {}
    for side, rows in (("difflab", args.difflab), ("diffusers", args.diffusers)):
        for row in rows:
            for k in args.nfe:
                if side == "difflab":
                    images, calls = run_difflab(module, args.ckpt, row, k, args.n, args)
                else:
                    images, calls = run_diffusers(module, row, k, args.n, args)
                cell = cells.setdefault(f"{row} [{side}]", {})[k] = {"calls": calls,
                                                                     "rmse": coupled_rmse(images, fine_images)}
                if k in args.fid_nfe and torch.isfinite(images).all():
                    feats = pool_features(extractor, images.clamp(-1, 1))
                    cell.update(fid=feature_fid(feats, ref), blocks=block_fids(feats, ref, args.blocks))
                print(f"{row} [{side}] NFE {k} ({calls}): coupled RMSE {cell['rmse']:.4f}, FID {cell.get('fid', '-')}"
                      f"  {time.perf_counter() - t0:.0f} s", flush=True)
    text = report(cells, fine, args, time.perf_counter() - t0, int(ref.meta["count"]))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "fid_samplers" if args.grid_distance == "pixel" else f"fid_samplers_{args.grid_distance}"
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps({"fine": fine, "cells": cells}, indent=1) + "\n")
    plot(cells, fine, args.nfe, args.out / f"{stem}.png")
    if args.docs is not None:
        update_docs(args.docs, text, args.out / f"{stem}.png")
    print(text)


if __name__ == "__main__":
    main()
