"""Distribution error of every difflab sampler against diffusers' schedulers, at equal NFE.

Problem: a 2-D Gaussian mixture x0 ~ sum_k w_k N(mu_k, s_k^2 I) has a closed-form denoiser
E[x0 | x0 + sigma eps] (responsibility-weighted per-component posterior means), so sampling error
comes from the sampler alone. All runs use DDPM's linear-beta VP schedule (T = 1000), the same
standard-normal starting points z (VP x_T = z), and a fixed seed for the injected noise.

Metrics per (sampler, NFE):
    W2     2-Wasserstein distance between the Gaussian fit of the samples and the mixture's exact
           mean/covariance: W2^2 = ||m1 - m2||^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)
    werr   L1 distance between the fractions of samples nearest each mu_k and the weights w_k
An "exact samples" row gives the Monte-Carlo floor of both metrics at this n.

difflab samplers are called directly, `SAMPLERS[name](D, x_T, sigmas, generator=g, **knobs)`, on
`DiscreteVPScheduler(grid=...)`. diffusers' schedulers get the exact denoiser as an eps-model of the VP
x_t, eps = (x - D(x, sigma_t)) / sigma_t with x = x_t / sqrt(alpha_bar_t); they use Karras sigmas where
they support them (`--grid karras`), else `timestep_spacing=--grid` (or their default spacing with
`--diffusers-spacing default`). Heun-type rows spend 2 * steps - 1 evaluations with steps = (NFE + 1) // 2;
pc spends 2 * (NFE // 2). A cell shows the evaluations actually spent in brackets when they differ from NFE.

    python benchmarks/samplers.py                     # karras grid, NFE 5 10 20 50 100, n = 4000
    python benchmarks/samplers.py --grid leading
    python benchmarks/samplers.py --nfe 10 20 --n 2000 --seed 1 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.toy import three_gaussians
from difflab.samplers import SAMPLERS

MIX = three_gaussians()  # difflab.diffusion.toy: 3 isotropic 2-D Gaussians with an exact denoiser
mixture_denoiser = MIX.denoiser

DIFFLAB = ("ddpm", "ddim", "euler", "heun", "euler_a", "dpmpp_2m", "pc", "euler_maruyama", "ode")
DIFFUSERS = {
    "ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler", "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}
Results = dict[str, dict[int, tuple[float, float, int]]]  # row label -> NFE -> (W2, werr, evaluations)


def sample_mixture(n: int, seed: int) -> Tensor:
    """n exact samples of the mixture ([n, 2]), for the Monte-Carlo floor of the metrics."""
    return MIX.sample(n, torch.Generator().manual_seed(seed))


def metrics(x: Tensor) -> tuple[float, float]:
    """(W2 between the Gaussian fit of x and the mixture, L1 error of nearest-mean component fractions)."""
    if not torch.isfinite(x).all():
        return float("nan"), float("nan")
    return MIX.w2_gaussian(x), MIX.weight_error(x)


class Counted:
    """Wraps a model to count its (batched) evaluations."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any) -> Tensor:
        self.calls += 1
        return self.fn(*args)


def difflab_plan(name: str, nfe: int) -> tuple[int, dict[str, Any]]:
    """(steps, knobs) spending at most `nfe` evaluations for a difflab sampler."""
    if name in ("heun", "ode"):
        return (nfe + 1) // 2, ({"method": "heun"} if name == "ode" else {})  # 2 * steps - 1 evaluations
    if name == "pc":
        return max(1, nfe // 2), {"corrector_steps": 1}  # corrector + predictor per step
    return nfe, {}


def run_difflab(name: str, nfe: int, grid: str, z: Tensor, seed: int) -> tuple[Tensor, int]:
    """Samples of one difflab sampler at an NFE budget, and the evaluations it spent."""
    sched = DiscreteVPScheduler(grid=grid)
    steps, knobs = difflab_plan(name, nfe)
    sigmas = sched.inference_sigmas(steps)
    model = Counted(mixture_denoiser)
    x_T = z * sched.prior_std(float(sigmas[0]))
    x = SAMPLERS[name](model, x_T, sigmas, generator=torch.Generator().manual_seed(seed), **knobs)
    return x, model.calls


def run_rk45(grid: str, z: Tensor, tol: float, steps: int) -> tuple[Tensor, int]:
    """Adaptive RK45 of the probability-flow ODE over the grid's range (plus the final denoising step)."""
    sched = DiscreteVPScheduler(grid=grid)
    sigmas = sched.inference_sigmas(steps)
    model = Counted(mixture_denoiser)
    x = SAMPLERS["ode"](model, z * sched.prior_std(float(sigmas[0])), sigmas, method="rk45", rtol=tol, atol=tol)
    return x, model.calls


def vp_eps_model(alphas_cumprod: Tensor) -> Callable[[Tensor, Any], Tensor]:
    """The exact denoiser as eps(x_t, t) of VP x_t; fractional t interpolates log sigma (as diffusers' _sigma_to_t)."""
    a = alphas_cumprod.double()
    log_sig = ((1 - a) / a).sqrt().log()  # (T,)

    def eps(x_t: Tensor, t: Any) -> Tensor:
        t = min(max(float(t), 0.0), len(log_sig) - 1.0)
        lo = math.floor(t)
        hi, w = min(lo + 1, len(log_sig) - 1), t - lo
        sigma = math.exp((1 - w) * float(log_sig[lo]) + w * float(log_sig[hi]))
        x = x_t.double() * math.sqrt(1 + sigma**2)  # sigma view: x = x_t / sqrt(alpha_bar)
        x0 = mixture_denoiser(x, torch.full((len(x),), sigma, dtype=torch.float64)).double()
        return ((x - x0) / sigma).float()

    return eps


def make_diffusers(name: str, grid: str, spacing: str) -> tuple[Any, str]:
    """A diffusers scheduler for DDPM's linear VP schedule on the grid closest to `grid`, and that grid's name.

    The betas are explicit: HeunDiscreteScheduler defaults to Stable Diffusion's (0.00085, 0.012).
    """
    import diffusers

    cls = getattr(diffusers, DIFFUSERS[name])
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    if "clip_sample" in params:
        kw["clip_sample"] = False
    if name == "dpmpp_2m":
        kw.update(algorithm_type="dpmsolver++", solver_order=2)
    if grid == "karras" and "use_karras_sigmas" in params:
        kw["use_karras_sigmas"] = True
        label = "karras"
    elif grid != "karras" and spacing == "match":
        kw["timestep_spacing"] = grid
        label = grid
    else:
        label = params["timestep_spacing"].default
    return cls(**kw), label


def run_diffusers(name: str, nfe: int, grid: str, spacing: str, z: Tensor, seed: int) -> tuple[Tensor, int, str]:
    """Samples from diffusers' scheduler loop at an NFE budget, the evaluations spent, and the grid used."""
    sched, label = make_diffusers(name, grid, spacing)
    sched.set_timesteps((nfe + 1) // 2 if name == "heun" else nfe)
    model = Counted(vp_eps_model(sched.alphas_cumprod))
    g = torch.Generator().manual_seed(seed)
    step_kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **step_kw).prev_sample
    return x, model.calls, label


def starting_points(n: int, seed: int) -> Tensor:
    """The standard-normal VP starting points x_T = z shared by every row ([n, 2])."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def run_all(nfes: list[int], n: int, grids: list[str], spacing: str, seed: int) -> tuple[Results, dict[str, str]]:
    """Every difflab and diffusers row at every NFE on each grid; returns results and the diffusers grid labels."""
    z = starting_points(n, seed)
    results: Results = {}
    labels: dict[str, str] = {}
    floor = metrics(sample_mixture(n, seed + 1))
    results["exact samples (floor)"] = {k: (*floor, 0) for k in nfes}
    at = (lambda g: f"@{g}") if len(grids) > 1 else (lambda g: "")
    for grid in grids:
        for name in DIFFLAB:
            label = f"{name}{at(grid)} [difflab]" if name != "ode" else f"ode heun{at(grid)} [difflab]"
            for k in nfes:
                x, calls = run_difflab(name, k, grid, z, seed + 2)
                results.setdefault(label, {})[k] = (*metrics(x), calls)
        for name in DIFFUSERS:
            for k in nfes:
                x, calls, labels[f"{name}{at(grid)}"] = run_diffusers(name, k, grid, spacing, z, seed + 2)
                results.setdefault(f"{name}{at(grid)} [diffusers]", {})[k] = (*metrics(x), calls)
    return results, labels


def format_table(results: Results, nfes: list[int]) -> str:
    """Markdown table: rows = samplers, columns = NFE, cells = 'W2 / werr' (evaluations if != NFE)."""
    lines = ["| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for label, row in results.items():
        cells = []
        for k in nfes:
            w2, werr, calls = row[k]
            extra = f" ({calls})" if calls and calls != k else ""
            cells.append(f"{w2:.4f} / {werr:.4f}{extra}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_vs_best(results: Results, nfes: list[int], rel_tol: float = 1e-3) -> str:
    """Per NFE: difflab's best W2, diffusers' best W2, and whether difflab's best <= diffusers' best (within rel_tol)."""
    lines = ["| NFE | best difflab | best diffusers | ratio | difflab <= diffusers |", "|---|---|---|---|---|"]
    for k in nfes:
        best = {}
        for side in ("difflab", "diffusers"):
            rows = [(r[k][0], label) for label, r in results.items() if f"[{side}]" in label and r[k][2] <= k]
            best[side] = min((w, lbl) for w, lbl in rows if math.isfinite(w))
        (d, d_lbl), (f, f_lbl) = best["difflab"], best["diffusers"]
        verdict = "yes" if d < f * (1 - rel_tol) else "tie" if d <= f * (1 + rel_tol) else "NO"
        lines.append(f"| {k} | {d:.4f} ({d_lbl}) | {f:.4f} ({f_lbl}) | {d / f:.3f} | {verdict} |")
    return "\n".join(lines)


def plot(results: Results, nfes: list[int], grid: str, path: Path) -> None:
    """W2 vs NFE, log-log, one line per sampler (diffusers dashed, the Monte-Carlo floor dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = dict(zip(DIFFLAB, plt.get_cmap("tab10").colors))
    for label, row in results.items():
        name = label.split(" ")[0]
        style = ":" if "floor" in label else "--" if "[diffusers]" in label else "-"
        ax.plot(nfes, [row[k][0] for k in nfes], style, marker="o", ms=3, label=label,
                color="black" if "floor" in label else colors.get(name))
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="W2 (Gaussian fit vs mixture)",
           title=f"Gaussian-mixture sampling error, DDPM linear VP, grid={grid}")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: Results, grids: dict[str, str], rk45: list[str], args: argparse.Namespace) -> str:
    """The Markdown report: settings, main table, RK45 rows, diffusers grids, best-vs-best summary."""
    grid_notes = ", ".join(f"{name}: {g}" for name, g in grids.items())
    return "\n".join([
        f"# Sampler error on a 2-D Gaussian mixture (grid={args.grid}, n={args.n}, seed={args.seed})", "",
        "Cells: W2 / mixture-weight L1 error; (k) = evaluations actually spent when != NFE.", "",
        format_table(results, args.nfe), "",
        "Adaptive RK45 (difflab `ode`, method=rk45), own NFE:", "",
        "| rtol = atol | NFE | W2 / werr |", "|---|---|---|", *rk45, "",
        f"difflab grid: {args.grid}. diffusers grids: {grid_notes}.", "",
        "Best W2 per NFE (rows within the NFE budget; tie = within 0.1%):", "", best_vs_best(results, args.nfe), "",
    ])


GRIDS = ("karras", "leading", "trailing", "linspace")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--grid", default="karras", choices=[*GRIDS, "all"],
                   help="'all': every sampler on every grid, both sides; the summary compares best with best")
    p.add_argument("--diffusers-spacing", default="match", choices=["match", "default"],
                   help="non-Karras grids: diffusers use timestep_spacing=--grid (match) or their own default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return p.parse_args()


def main() -> None:
    """Run every sampler, print and save the Markdown report and the plot."""
    args = parse_args()
    t0 = time.perf_counter()
    grid_list = list(GRIDS) if args.grid == "all" else [args.grid]
    results, grids = run_all(args.nfe, args.n, grid_list, args.diffusers_spacing, args.seed)
    z = starting_points(args.n, args.seed)
    rk45 = []
    for tol in (1e-3, 1e-5):
        x, calls = run_rk45(grid_list[0], z, tol, max(args.nfe))
        w2, werr = metrics(x)
        rk45.append(f"| {tol:g} | {calls} | {w2:.4f} / {werr:.4f} |")
    text = report(results, grids, rk45, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"samplers_{args.grid}.md").write_text(text)
    plot(results, args.nfe, args.grid, args.out / f"samplers_{args.grid}.png")
    print(text)
    print(f"saved {args.out / f'samplers_{args.grid}.md'} and .png in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
