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
`--diffusers-spacing default`). Heun-type rows (heun, ode, dpmpp_sde) spend 2 * steps - 1 evaluations with
steps = (NFE + 1) // 2;
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
from difflab.diffusion.toy import three_gaussians, w2_between_fits
from difflab.samplers import SAMPLERS
from difflab.samplers.grids import FittedGrid, optimize_grid

MIX = three_gaussians()  # difflab.diffusion.toy: 3 isotropic 2-D Gaussians with an exact denoiser
mixture_denoiser = MIX.denoiser

DIFFLAB = ("ddpm", "ddim", "euler", "heun", "euler_a", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde", "unipc",
           "unipc_bh1", "deis", "dpmpp_sde", "lms", "plms", "ipndm", "pc", "euler_maruyama", "ode")
OPTIMIZED = ("heun", "dpmpp_2m", "dpmpp_3m", "unipc", "unipc_bh1", "deis", "lms", "ipndm")  # also on grid=optimized
ROW_SAMPLERS = {"unipc_bh1": ("unipc", {"variant": "bh1"})}  # difflab rows that are a sampler with knobs
DIFFUSERS = {  # row name -> (diffusers scheduler, its options)
    "ddpm": ("DDPMScheduler", {}), "ddim": ("DDIMScheduler", {}), "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}), "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 3}), "unipc2": ("UniPCMultistepScheduler", {}),
    # UniPC with B(h) = h (bh1) gives NaN with diffusers' default final_sigmas_type="zero" (h = inf on the last step);
    # it runs, as order-3 bh2 also does, with the last step to sigma_min (which wins at 5-10 NFE on the mixture)
    "unipc_bh1": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    "unipc2_bh1": ("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    "unipc_sigma_min": ("UniPCMultistepScheduler", {"solver_order": 3, "final_sigmas_type": "sigma_min"}),
    "deis": ("DEISMultistepScheduler", {}), "deis3": ("DEISMultistepScheduler", {"solver_order": 3}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {"noise_sampler_seed": 0}), "lms": ("LMSDiscreteScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
}
Results = dict[str, dict[int, tuple[float, float, float, float, int]]]
# row -> NFE -> (W2, werr, W2 to reference, coupled RMSE to reference, evaluations)
METRIC_NAMES = {0: "W2 to the mixture moments", 2: "W2 between Gaussian fits of the samples and the reference solve",
                3: "coupled RMSE to the reference solve from the same x_T"}


def sample_mixture(n: int, seed: int) -> Tensor:
    """n exact samples of the mixture ([n, 2]), for the Monte-Carlo floor of the metrics."""
    return MIX.sample(n, torch.Generator().manual_seed(seed))


def coupled_rmse(x: Tensor, reference: Tensor) -> tuple[float, float]:
    """(sqrt(mean_i ||x_i - ref_i||^2), its standard error) for samples and reference from the same x_T ([n, d]).

    For a deterministic sampler this is the discretisation error alone (no Monte-Carlo floor: it is 0 for the
    reference itself) and an upper bound on W2 between the two distributions (the coupling x_T -> (x, ref)).
    Standard error by the delta method: se(mse) / (2 rmse), se(mse) = std of the per-sample squared errors / sqrt(n).
    """
    sq = ((x.double() - reference.double()) ** 2).sum(1)
    mse = float(sq.mean())
    rmse = math.sqrt(mse)
    return rmse, (float(sq.std()) / math.sqrt(len(sq)) / (2 * rmse) if rmse > 0 else 0.0)


def metrics(x: Tensor, reference: Tensor) -> tuple[float, float, float, float]:
    """(W2 between the Gaussian fit of x and the mixture, L1 error of nearest-mean component fractions,
    W2 between the Gaussian fits of x and of the reference solve from the same starting points,
    coupled RMSE to that reference solve)."""
    if not torch.isfinite(x).all():
        return float("nan"), float("nan"), float("nan"), float("nan")
    yd = reference.double()
    return (MIX.w2_gaussian(x), MIX.weight_error(x), w2_between_fits(x, yd.mean(0), torch.cov(yd.T)),
            coupled_rmse(x, yd)[0])


class Counted:
    """Wraps a model to count its (batched) evaluations."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any) -> Tensor:
        self.calls += 1
        return self.fn(*args)


def row_sampler(row: str) -> tuple[str, dict[str, Any]]:
    """(registered sampler, knobs) of a difflab row: a sampler's own name, or one of ROW_SAMPLERS."""
    name, knobs = ROW_SAMPLERS.get(row, (row, {}))
    return name, dict(knobs)


def difflab_plan(row: str, nfe: int) -> tuple[int, dict[str, Any]]:
    """(steps, knobs) spending at most `nfe` evaluations for a difflab row (a sampler, or one of ROW_SAMPLERS)."""
    name, knobs = row_sampler(row)
    if name != row:
        return nfe, knobs
    if name in ("heun", "ode", "dpmpp_sde"):
        return (nfe + 1) // 2, ({"method": "heun"} if name == "ode" else {})  # 2 * steps - 1 evaluations
    if name == "pc":
        return max(1, nfe // 2), {"corrector_steps": 1}  # corrector + predictor per step
    if name == "plms":
        return nfe - 1, {}  # PNDM's pseudo improved-Euler start: steps + 1 evaluations
    return nfe, {}


GRID_SEED = 1000  # the optimized grids are fitted on starting points drawn from another seed than the rows'
GRID_FIT_N = 4000  # starting points the optimized grids are fitted on (the mixture's denoiser is cheap)
GRID_EVALS: dict[str, int | None] = {"max_evals": None, "query_evals": None}  # search budgets (None: the library's)
_FITTED: dict[tuple[str, int], FittedGrid] = {}  # (row, steps) -> its optimized grid, fitted once per run


def run_difflab(row: str, nfe: int, grid: str, z: Tensor, seed: int) -> tuple[Tensor, int]:
    """Samples of one difflab row at an NFE budget, and the evaluations it spent."""
    sched = DiscreteVPScheduler(grid=grid)
    name = row_sampler(row)[0]
    steps, knobs = difflab_plan(row, nfe)
    denoiser = mixture_denoiser
    if grid == "optimized":
        if (row, steps) not in _FITTED:
            _FITTED[row, steps] = optimize_grid(mixture_denoiser, sched, name, steps, knobs, (2,), n=GRID_FIT_N,
                                                seed=GRID_SEED, **GRID_EVALS)
        sigmas, denoiser = _FITTED[row, steps].sigmas, _FITTED[row, steps].denoiser(mixture_denoiser)
    else:
        sigmas = sched.inference_sigmas(steps)
    model = Counted(denoiser)
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


def vp_eps_model(alphas_cumprod: Tensor, denoiser: Callable[..., Tensor] = mixture_denoiser
                 ) -> Callable[[Tensor, Any], Tensor]:
    """A denoiser D(x, sigma) (default: the mixture's exact one) as eps(x_t, t) of VP x_t, for diffusers' loops;
    fractional t interpolates log sigma (as diffusers' _sigma_to_t)."""
    a = alphas_cumprod.double()
    log_sig = ((1 - a) / a).sqrt().log()  # (T,)

    def eps(x_t: Tensor, t: Any) -> Tensor:
        t = min(max(float(t), 0.0), len(log_sig) - 1.0)
        lo = math.floor(t)
        hi, w = min(lo + 1, len(log_sig) - 1), t - lo
        sigma = math.exp((1 - w) * float(log_sig[lo]) + w * float(log_sig[hi]))
        x = x_t.double() * math.sqrt(1 + sigma**2)  # sigma view: x = x_t / sqrt(alpha_bar)
        x0 = denoiser(x, torch.full((len(x),), sigma, dtype=torch.float64)).double()
        return ((x - x0) / sigma).float()

    return eps


def make_diffusers(name: str, grid: str) -> Any:
    """A diffusers scheduler for DDPM's linear VP schedule on `grid`, or None where diffusers has no such grid.

    The betas are explicit: HeunDiscreteScheduler defaults to Stable Diffusion's (0.00085, 0.012).
    """
    import diffusers

    cls_name, options = DIFFUSERS[name]
    cls = getattr(diffusers, cls_name)
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                          **options}
    if "clip_sample" in params:
        kw["clip_sample"] = False
    flag = {"karras": "use_karras_sigmas", "logsnr": "use_exponential_sigmas"}.get(grid)
    if flag is not None and flag in params:
        kw[flag] = True
    elif grid in ("leading", "trailing", "linspace") and "timestep_spacing" in params:
        kw["timestep_spacing"] = grid
    else:
        return None
    return cls(**kw)


def run_diffusers(name: str, nfe: int, grid: str, z: Tensor, seed: int,
                  denoiser: Callable[..., Tensor] = mixture_denoiser) -> tuple[Tensor, int] | None:
    """Samples from diffusers' scheduler loop at an NFE budget and the evaluations spent (None: no such grid)."""
    sched = make_diffusers(name, grid)
    if sched is None:
        return None
    sched.set_timesteps((nfe + 1) // 2 if name in ("heun", "dpmpp_sde") else nfe - 1 if name == "plms" else nfe)
    model = Counted(vp_eps_model(sched.alphas_cumprod, denoiser))
    g = torch.Generator().manual_seed(seed)
    step_kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **step_kw).prev_sample
    return x, model.calls


def starting_points(n: int, seed: int) -> Tensor:
    """The standard-normal VP starting points x_T = z shared by every row ([n, 2])."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def reference_solve(z: Tensor) -> Tensor:
    """The probability-flow ODE from the rows' starting points, solved finely (UniPC-3, 500 log-SNR steps)."""
    sched = DiscreteVPScheduler(grid="logsnr")
    sigmas = sched.inference_sigmas(500)
    return SAMPLERS["unipc"](mixture_denoiser, z * sched.prior_std(float(sigmas[0])), sigmas)


def run_all(nfes: list[int], n: int, grids: list[str], seed: int) -> Results:
    """Every difflab and diffusers row at every NFE on each grid (diffusers: where it has the grid)."""
    z = starting_points(n, seed)
    ref = reference_solve(z)
    results: Results = {}
    floor = metrics(sample_mixture(n, seed + 1), ref)
    results["exact samples (floor)"] = {k: (*floor, 0) for k in nfes}
    results["reference solve"] = {k: (*metrics(ref, ref), 500) for k in nfes}
    for grid in grids:
        for name in (OPTIMIZED if grid == "optimized" else DIFFLAB):
            label = f"{name}@{grid} [difflab]"
            for k in nfes:
                x, calls = run_difflab(name, k, grid, z, seed + 2)
                results.setdefault(label, {})[k] = (*metrics(x, ref), calls)
            print(label, {k: round(v[3], 4) for k, v in results[label].items()}, flush=True)
        for name in DIFFUSERS if grid != "optimized" else ():
            for k in nfes:
                out = run_diffusers(name, k, grid, z, seed + 2)
                if out is not None:
                    results.setdefault(f"{name}@{grid} [diffusers]", {})[k] = (*metrics(out[0], ref), out[1])
    return results


def format_table(results: Results, nfes: list[int]) -> str:
    """Markdown table: rows = samplers, columns = NFE, cells = 'W2 / werr / W2 to reference / coupled RMSE'
    (evaluations if != NFE)."""
    lines = ["| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    for label, row in results.items():
        cells = []
        for k in nfes:
            *values, calls = row[k]
            extra = f" ({calls})" if calls and calls != k else ""
            cells.append(" / ".join(f"{v:.4f}" for v in values) + extra)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_vs_best(results: Results, nfes: list[int], metric: int) -> str:
    """Per NFE: difflab's best and diffusers' best of one metric (an index of METRIC_NAMES), among rows that spent
    at most NFE evaluations, and their ratio."""
    lines = ["| NFE | best difflab | best diffusers | ratio difflab / diffusers |", "|---|---|---|---|"]
    for k in nfes:
        best = {}
        for side in ("difflab", "diffusers"):
            rows = [(r[k][metric], label) for label, r in results.items() if f"[{side}]" in label and r[k][-1] <= k]
            best[side] = min((w, lbl) for w, lbl in rows if math.isfinite(w))
        (d, d_lbl), (f, f_lbl) = best["difflab"], best["diffusers"]
        lines.append(f"| {k} | {d:.4f} ({d_lbl}) | {f:.4f} ({f_lbl}) | {d / f:.3f} |")
    return "\n".join(lines)


def plot(results: Results, nfes: list[int], path: Path) -> None:
    """Coupled RMSE to the reference solve vs NFE, log-log: each sampler at its best grid per NFE (diffusers dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best: dict[str, list[float]] = {}
    for label, row in results.items():
        if "[" not in label:
            continue
        key = label.split("@")[0] + " " + label.split(" ")[-1]
        vals = [row[k][3] if row[k][-1] <= k else math.nan for k in nfes]
        best[key] = [min(a, b) if math.isfinite(a) else b for a, b in zip(best.get(key, [math.inf] * len(nfes)), vals)]
    fig, ax = plt.subplots(figsize=(9, 6))
    cmap = plt.get_cmap("tab20")
    for i, (key, vals) in enumerate(sorted(best.items())):
        ax.plot(nfes, vals, "--" if "diffusers" in key else "-", marker="o", ms=3, label=key, color=cmap(i % 20))
    ax.set(xscale="log", yscale="log", xlabel="NFE (denoiser calls)", ylabel="coupled RMSE to the reference solve",
           title="Gaussian-mixture sampling error, DDPM linear VP, best grid per sampler and NFE")
    ax.legend(fontsize=6, ncol=3)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def best_rows(results: Results, nfe: int, metric: int) -> list[str]:
    """Labels of difflab's and diffusers' best rows at one NFE budget by one metric."""
    out = []
    for side in ("difflab", "diffusers"):
        rows = [(r[nfe][metric], lbl) for lbl, r in results.items() if f"[{side}]" in lbl and r[nfe][-1] <= nfe]
        out.append(min((w, lbl) for w, lbl in rows if math.isfinite(w))[1])
    return out


def rerun(label: str, nfe: int, z: Tensor, seed: int) -> tuple[Tensor, int]:
    """One row of the table (its label 'name@grid [side]') at one NFE on other starting points."""
    name, rest = label.split("@")
    grid, side = rest.split(" ")
    if side == "[difflab]":
        return run_difflab(name, nfe, grid, z, seed)
    out = run_diffusers(name, nfe, grid, z, seed)
    assert out is not None
    return out


def spread(results: Results, nfes: list[int], n: int, seeds: list[int]) -> str:
    """The best rows (by W2 to the reference and by coupled RMSE) rerun on other starting points: how much of each
    metric is the estimator's own scatter. Cells: min-max over the seeds."""
    lines = [f"| NFE | row | W2 to reference, seeds {seeds} | coupled RMSE ± se, seeds {seeds} |", "|---|---|---|---|"]
    for k in nfes:
        for label in dict.fromkeys(best_rows(results, k, 2) + best_rows(results, k, 3)):
            w2s, rmses = [], []
            for s in seeds:
                z = starting_points(n, s)
                ref = reference_solve(z)
                x, _ = rerun(label, k, z, s + 2)
                w2s.append(metrics(x, ref)[2])
                rmses.append(coupled_rmse(x, ref))
            lines.append(f"| {k} | {label} | {min(w2s):.4f}-{max(w2s):.4f} | "
                         + ", ".join(f"{r:.4f}±{e:.4f}" for r, e in rmses) + " |")
    return "\n".join(lines)


def budget_options(args: argparse.Namespace) -> str:
    """The search-budget options as typed on the command line ('' for the library's defaults)."""
    return "".join(f" --{flag} {v}" for flag, v in (("grid-evals", args.grid_evals), ("query-evals", args.query_evals))
                   if v is not None)


def budget_text(args: argparse.Namespace) -> str:
    """The optimized grids' search budget in words."""
    levels = "20 (N + 1)" if args.grid_evals is None else str(args.grid_evals)
    queries = "20 (2 N + 1)" if args.query_evals is None else str(args.query_evals)
    return f"{levels} sampler runs over the levels, then {queries} over levels and query levels"


def report(results: Results, rk45: list[str], scatter: str, args: argparse.Namespace, seconds: float) -> str:
    """The Markdown report: settings, best-vs-best summaries, the metrics' scatter, main table, RK45 rows."""
    return "\n".join([
        f"# Sampler error on a 2-D Gaussian mixture (grids={args.grid}, n={args.n}, seed={args.seed})", "",
        f"Command: `python benchmarks/samplers.py --grid {args.grid} --nfe {' '.join(map(str, args.nfe))} --n {args.n}"
        f" --seed {args.seed}{budget_options(args)}` ({seconds:.0f} s).", "",
        "Best per NFE budget among rows that spent at most NFE denoiser calls. Headline: the coupled RMSE",
        "sqrt(mean_i ||x_i - ref_i||^2) to the fine ODE solve from the same x_T: for a deterministic sampler it is",
        "the discretisation error alone (0 for the reference itself, no Monte-Carlo floor) and an upper bound on W2",
        "between the sampler's distribution and the ODE's. Stochastic rows pay their injected noise in it.", "",
        best_vs_best(results, args.nfe, 3), "",
        "W2 between the Gaussian fits of the samples and of the reference solve (the earlier headline: moments only,",
        "so errors of opposite sign cancel, and its scatter across starting points is as large as its value at",
        "NFE >= 20, see below):", "",
        best_vs_best(results, args.nfe, 2), "",
        "W2 to the exact mixture moments (includes the Monte-Carlo floor of n samples, see the floor row):", "",
        best_vs_best(results, args.nfe, 0), "",
        f"The best rows rerun on other starting points (n={args.n} each): the scatter of each metric.", "",
        scatter, "",
        "Cells: W2 to the mixture / mixture-weight L1 error / W2 to the reference solve / coupled RMSE to it;",
        "(k) = evaluations actually spent when != NFE. `@optimized`: grid=optimized (levels and query levels) fitted"
        f" on {GRID_FIT_N} other starting points (seed {GRID_SEED}), search budget: {budget_text(args)}.", "",
        format_table(results, args.nfe), "",
        "Adaptive RK45 (difflab `ode`, method=rk45), own NFE:", "",
        "| rtol = atol | NFE | W2 / werr / W2 to reference / coupled RMSE |", "|---|---|---|", *rk45, "",
    ])


GRIDS = ("karras", "leading", "trailing", "linspace", "logsnr", "optimized")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--grid", default="all", choices=[*GRIDS, "all"],
                   help="'all': every sampler on every grid, both sides (diffusers where it has the grid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread-seeds", type=int, nargs="*", default=[1, 2, 3],
                   help="starting-point seeds the best rows are rerun on (the metrics' scatter)")
    p.add_argument("--grid-evals", type=int, default=None,
                   help="sampler runs of grid=optimized's search over the levels (default: the library's 20 (N + 1))")
    p.add_argument("--query-evals", type=int, default=None,
                   help="sampler runs of its joint search with the query levels (default: the library's 20 (2 N + 1))")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return p.parse_args()


def main() -> None:
    """Run every sampler, print and save the Markdown report and the plot."""
    args = parse_args()
    GRID_EVALS.update(max_evals=args.grid_evals, query_evals=args.query_evals)
    t0 = time.perf_counter()
    grid_list = list(GRIDS) if args.grid == "all" else [args.grid]
    results = run_all(args.nfe, args.n, grid_list, args.seed)
    z = starting_points(args.n, args.seed)
    ref = reference_solve(z)
    rk45 = []
    for tol in (1e-3, 1e-5):
        x, calls = run_rk45("karras", z, tol, max(args.nfe))
        rk45.append(f"| {tol:g} | {calls} | " + " / ".join(f"{v:.4f}" for v in metrics(x, ref)) + " |")
    scatter = spread(results, args.nfe, args.n, args.spread_seeds)
    text = report(results, rk45, scatter, args, time.perf_counter() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"samplers_{args.grid}.md").write_text(text)
    plot(results, args.nfe, args.out / f"samplers_{args.grid}.png")
    print(text)
    print(f"saved {args.out / f'samplers_{args.grid}.md'} and .png in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
