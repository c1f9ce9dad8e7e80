"""Which part of the training recipe makes early digits models fragile under deterministic samplers?

Trains difflab's default model once per recipe (the default config plus that recipe's Hydra overrides),
with the LR schedule of the full default run (`--total` steps) but snapshots of the EMA and raw weights at
`--at` steps, and scores each snapshot like benchmarks/peers.py: broken rate (difflab.metrics.broken) and,
unless --no-fid, FID under DDPM-1000, DDIM-50 and DPM-Solver++ 2M-20 from the same per-image noises.

    python benchmarks/recipes.py --at 500 1000 --recipes base v minsnr --n 128 --n-ddpm 64 \
        --out benchmarks/results/recipes.md
    python benchmarks/recipes.py --recipe-def "lr2e-3=model.optimizer.lr=2e-3" --recipes lr2e-3

A recipe is NAME (one of RECIPES below) or defined on the command line with --recipe-def NAME=o1,o2,...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from denoiser_error import SIGMAS, module_errors  # benchmarks/ is on sys.path when run as a script
from peers import SAMPLERS, score, train_difflab

from difflab.data import DigitsDataModule
from difflab.evaluation import MetricSuite, MetricsConfig
from difflab.samplers import SamplerSpec

RECIPES: dict[str, list[str]] = {
    "base": [],
    "eps": ["scheduler.prediction=eps"],
    "eps_minsnr": ["scheduler.prediction=eps", "model.loss.weighting=min_snr"],
    "v": ["scheduler.prediction=v"],
    "x0": ["scheduler.prediction=x0"],
    "minsnr": ["model.loss.weighting=min_snr"],
    "v_minsnr": ["scheduler.prediction=v", "model.loss.weighting=min_snr"],
    "lr5e-4": ["model.optimizer.lr=5e-4"],
    "lr2e-3": ["model.optimizer.lr=2e-3"],
    "warm500": ["model.lr_scheduler.warmup_steps=500"],
    "cosine": ["scheduler.betas=cosine"],
    "nowarmema": ["callbacks.ema.warmup=false", "callbacks.ema.decay=0.999"],
}


def train(overrides: list[str], total: int, at: set[int]) -> tuple[dict, float]:
    """The default config + overrides with the LR schedule of a `total`-step run, trained to max(at); returns
    ({(step, "ema" | "raw"): module}, training seconds)."""
    snaps, _ = train_difflab(None, total, at, overrides, stop=max(at), raw=True, root="/tmp/difflab_recipes")
    modules = {**{(s, "ema"): m for s, m in snaps.modules.items()}, **{(s, "raw"): m for s, m in snaps.raw.items()}}
    return modules, snaps.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["base"])
    parser.add_argument("--recipe-def", nargs="*", default=[], help="NAME=override,override,...")
    parser.add_argument("--total", type=int, default=2000, help="length of the run whose LR schedule is used")
    parser.add_argument("--at", type=int, nargs="+", default=[500])
    parser.add_argument("--weights", nargs="+", default=["ema", "raw"], choices=["ema", "raw"])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--n-ddpm", type=int, default=64)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--inception", default="../shared/assets/inception/inception_fid_trunk.pth")
    parser.add_argument("--cache-dir", default="data/metric_stats")
    parser.add_argument("--clip", nargs="+", default=["auto"], help="sampler.clip_denoised modes to score: auto true false dynamic")
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/recipes.md")
    args = parser.parse_args()
    recipes = dict(RECIPES)
    for item in args.recipe_def:
        name, _, overrides = item.partition("=")
        recipes[name] = [o for o in overrides.split(",") if o]
    config = MetricsConfig(n_samples=args.n, fid=not args.no_fid, kid=False, inception_score=False, lpips_diversity=False,
                           clip_score=False, reference={"split": "train", "n": None}, cache_dir=args.cache_dir,
                           download=False, feature_batch_size=64, weights={"inception": args.inception})
    suite = MetricSuite(config, strict=True)
    suite.prepare_reference(DigitsDataModule(resolution=16, batch_size=64, seed=0))
    n = {"ddpm": args.n_ddpm, "fast": args.n}
    out = Path(args.out)
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    for name in args.recipes:
        print(f"recipe {name}: {recipes[name]}", flush=True)
        modules, seconds = train(recipes[name], args.total, set(args.at))
        entry = {"overrides": recipes[name], "img_per_s": max(args.at) * 64 / seconds, "scores": {}, "denoiser_error": {}}
        data = DigitsDataModule(resolution=16, batch_size=64, seed=0)
        for (step, weights), module in sorted(modules.items()):
            if weights not in args.weights:
                continue
            _, err, trivial = module_errors(module, data, 128, 0)  # x0-space MSE per sigma on validation digits
            entry["denoiser_error"][f"{step}/{weights}"] = {"model": {f"{k:g}": v for k, v in err.items()},
                                                           "mean": {f"{k:g}": v for k, v in trivial.items()}}
            for mode in args.clip:
                clip = {"true": True, "false": False}.get(mode, mode)
                clip = module.sampling_spec(SamplerSpec(clip_denoised=clip)).clip_denoised  # auto: what the model runs
                print(f"{name} step {step} {weights} clip_denoised={clip}", flush=True)
                with torch.no_grad():
                    key = f"{step}/{weights}" + ("" if mode == "auto" else f"/clip={mode}")
                    entry["scores"][key] = score(module.denoiser, module.scheduler, clip, suite, n, args.samplers)
        results[name] = entry
        write(results, args)


def write(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Markdown table (one row per recipe, step and weights) and the raw JSON next to it."""
    samplers = args.samplers
    head = " | ".join(f"{s} FID / broken" for s in samplers)
    lines = [f"| recipe | overrides | snapshot | {head} | img/s |", "|---|---|---|" + "---:|" * (len(samplers) + 1)]
    for name, e in results.items():
        for snap, v in e["scores"].items():
            cells = " | ".join(f"{v.get(f'{s}/fid', math.nan):.1f} / {v.get(f'{s}/broken_rate', math.nan):.1%}"
                               for s in samplers)
            lines.append(f"| {name} | `{' '.join(e['overrides']) or '(default)'}` | {snap} | {cells} | {e['img_per_s']:.0f} |")
    lines += ["", "Denoiser error E||D(x0 + sigma eps, sigma) - x0||^2 per pixel, 128 validation digits:", "",
              "| recipe | snapshot | " + " | ".join(f"sigma {s:g}" for s in SIGMAS) + " |", "|---|---|" + "---:|" * len(SIGMAS)]
    for name, e in results.items():
        for snap, v in e.get("denoiser_error", {}).items():
            lines.append(f"| {name} | {snap} | " + " | ".join(f"{v['model'][f'{s:g}']:.4f}" for s in SIGMAS) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
