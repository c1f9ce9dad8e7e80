"""Optimized noise-level grids: for one model, sampler and step count, the levels that minimise a measured error.

In the spirit of Sabour et al. 2024, "Align Your Steps" (AYS): rather than a fixed rule (Karras, log-SNR, timestep
spacings), the grid is fitted to the model. AYS minimises a KL upper bound by stochastic optimisation; here the
objective is the discretisation error itself, measured against a fine reference solve from the same starting points:

    E(grid) = mean_i ||S_grid(x_T^i) - x_ref^i||^2,   x_ref = UniPC(3) with `reference_steps` on the log-SNR grid
    grid    = (s_0, ..., s_{N-1}, 0),  sigma_max >= s_0 > ... > s_{N-1} >= sigma_min; x_T = z * prior_std(s_0), the
              same standard-normal z for every grid (as `generate` starts any grid)

Minimised jointly over all levels: the levels are parameterised by the N + 1 gaps in log sigma between
log sigma_max, s_0, ..., s_{N-1}, log sigma_min (gaps = softmax(u) * (log sigma_max - log sigma_min), so every u is
a valid descending grid) and u is searched by Powell's method (conjugate directions, derivative-free: any sampler
and any model, no backpropagation through the network), from the best of a set of starting grids: the scheduler's
own grids (Karras, log-SNR, its timestep spacings) and Karras / log-SNR grids whose last level is raised (a larger
final level, from which the last step x = D(x, s_{N-1}) denoises, often pays at few steps). The search keeps the
best grid it evaluated, so the result is never worse than any starting grid on the fit samples. Deterministic
samplers only (the error of one path is defined for them alone).

Fitted query levels. The sampler steps between the grid's levels, but the denoiser need not be asked at the level it
steps from: querying D(x, q_i) at q_i = s_i exp(d_i) lets a few fitted numbers absorb part of the discretisation
error of large steps (the idea of time-shifted sampling, Li et al. 2024, which asks the network at a shifted
level; here the shifts are fitted with the grid, as the levels are, by the same measured error). A second Powell
search runs over (u, d) jointly from (best u, d = 0), so it too is never worse on the fit samples than the grid
alone. Between and beyond the grid's levels (a sampler's intermediate stages, an edit's truncated grid) the shift
d is interpolated linearly in log sigma; queries stay inside [sigma_min, sigma_max]. The fitted d shrinks as the
steps grow (the grid alone is then accurate; on the 2-D mixture, UniPC: mean |d| 0.08 at 5 steps, 0.001 at 40).

The distance. By default the error is the squared distance in the sampler's own space (pixels or latents).
`embed` measures it in a feature space instead, ||e(S_grid(x_T)) - e(x_ref)||^2: with the FID Inception features
(`sampler.grid_distance=inception`) the fit weighs what FID sees. On the default digits DDPM at 10 steps FID is
dominated by small noise-like differences that the pixel error hardly weighs (white noise of RMS 0.01 added to a
fine solve's images costs 3 FID): a UniPC grid fitted on 32 images in pixels gives FID 28.1, in Inception
features 26.0, against 25.5 for the fine solve (docs/samplers.md).

Notation: N = steps, x_T [n, *shape] prior samples from a fixed seed, S_grid the sampler run on `grid`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from difflab.diffusion.schedules import GRIDS, SCHEDULE_TYPES, Scheduler, karras_sigmas, logsnr_sigmas
from difflab.samplers.base import SAMPLERS, DenoiseFn

CACHE_VERSION = 4  # 2: joint (Powell) search from raised-last-level starts; 3: fitted query levels; 4: the distance


@dataclass(frozen=True)
class FittedGrid:
    """An optimized grid: the levels `sigmas` ([steps + 1], float64, ending at 0) and the noise level `queries`
    ([steps]) the denoiser is asked at for each positive level (equal to the levels when no shift was fitted)."""

    sigmas: Tensor
    queries: Tensor

    @classmethod
    def unshifted(cls, sigmas: Tensor) -> FittedGrid:
        return cls(sigmas, sigmas[:-1].clone())

    def denoiser(self, denoise_fn: DenoiseFn) -> DenoiseFn:
        """`denoise_fn` asked at the fitted query level of each level (`shifted_denoiser`)."""
        return shifted_denoiser(denoise_fn, self.sigmas[:-1], self.queries)


def shifted_denoiser(denoise_fn: DenoiseFn, levels: Tensor, queries: Tensor) -> DenoiseFn:
    """D(x, sigma) -> denoise_fn(x, sigma exp(d(log sigma))), d interpolated linearly in log sigma between the given
    (level, log(query / level)) pairs and constant beyond them (so between two levels the query lies between theirs);
    the identity when every query equals its level."""
    log_levels, shift = levels.double().log(), (queries.double() / levels.double()).log()
    if bool((shift == 0).all()):
        return denoise_fn
    order = torch.argsort(log_levels)
    xs, ys = log_levels[order].numpy(), shift[order].numpy()

    def fn(x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        flat = sigma.detach().double().cpu().reshape(-1)
        d = torch.from_numpy(np.interp(flat.clamp_min(1e-30).log().numpy(), xs, ys))
        query = torch.where(flat > 0, flat * d.exp(), flat).reshape(sigma.shape)
        return denoise_fn(x, query.to(sigma.device, sigma.dtype), cond)

    return fn


def _error(run: Callable[[Tensor, Tensor], Tensor], log_sigmas: Tensor, x_ref: Tensor,
           log_queries: Tensor | None = None) -> float:
    """E(grid) for the positive levels exp(log_sigmas), then 0, with the denoiser asked at exp(log_queries)
    (default: at the levels)."""
    sigmas = torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)])
    queries = sigmas[:-1] if log_queries is None else log_queries.exp()
    err = ((run(sigmas, queries) - x_ref).double() ** 2).flatten(1).sum(1).mean()
    return float(err) if torch.isfinite(err) else math.inf


def _levels(u: np.ndarray, log_min: float, log_max: float) -> Tensor:
    """The N log levels of the gap logits u [N + 1] (module docstring), descending from log_max towards log_min."""
    w = np.exp(u - u.max())
    return torch.tensor(log_max - (log_max - log_min) * np.cumsum(w / w.sum())[:-1], dtype=torch.float64)


def _logits(log_sigmas: Tensor, log_min: float, log_max: float) -> np.ndarray:
    """Inverse of `_levels` (up to a constant): the log gaps of a grid, floored so that equal levels stay finite."""
    ends = np.concatenate([[log_max], log_sigmas.numpy(), [log_min]])
    return np.log(np.maximum(-np.diff(ends), 1e-6 * (log_max - log_min)))


def _starting_grids(scheduler: Scheduler, steps: int) -> list[Tensor]:
    """Log levels [steps] of the scheduler's own grids and of Karras / log-SNR grids with a raised last level.

    Not the web UI's schedule types (`SCHEDULE_TYPES`): started from them too, the fit changes (DPM++ 2M, 5 steps, on
    the mixture of tests/unit/samplers/test_grids.py: held-out RMS 0.207 from Align Your Steps' 0.215, against 0.28
    from trailing's 0.39), which is a decision of its own (its cache key's version would change with it)."""
    grids = [g for g in getattr(type(scheduler), "grids", GRIDS) if g != "optimized" and g not in SCHEDULE_TYPES]
    out = [scheduler.with_grid(g).inference_sigmas(steps)[:-1].log() for g in grids]
    lo, hi = scheduler.sigma_min, scheduler.sigma_max
    for last in np.geomspace(lo, math.sqrt(lo * hi), 6)[1:]:  # raised last levels, up to the geometric midpoint
        out += [karras_sigmas(steps, float(last), hi, scheduler.rho)[:-1].log(),
                logsnr_sigmas(steps, float(last), hi)[:-1].log()]
    return out


def _powell(objective: Callable[[np.ndarray], float], start: np.ndarray, max_evals: int) -> None:
    """Powell's method (derivative-free) on `objective` from `start`, at most `max_evals` evaluations."""
    if max_evals > 0:
        minimize(lambda u: min(objective(u), 1e30), start, method="Powell",
                 options={"maxfev": max_evals, "xtol": 1e-3, "ftol": 1e-5})


def _search(run: Callable[[Tensor, Tensor], Tensor], start: Tensor, x_ref: Tensor, bounds: tuple[float, float],
            grid_evals: int, query_evals: int) -> tuple[Tensor, Tensor]:
    """Powell over the gap logits u from `start`, then over (u, d) jointly from (best u, d = 0); returns the best
    (log levels, log query levels) evaluated."""
    log_min, log_max = bounds
    n = len(start)
    best: list[Any] = [start, start, _error(run, start, x_ref)]

    def measure(levels: Tensor, shift: Tensor | None) -> float:
        log_q = levels if shift is None else (levels + shift).clamp(log_min, log_max)
        err = _error(run, levels, x_ref, log_q)
        if err < best[2]:
            best[:] = [levels, log_q, err]
        return err

    _powell(lambda u: measure(_levels(u, log_min, log_max), None), _logits(start, log_min, log_max), grid_evals)
    if query_evals > 0:
        u0 = _logits(best[0], log_min, log_max)
        d0 = (best[1] - best[0]).numpy()
        _powell(lambda p: measure(_levels(p[: n + 1], log_min, log_max), torch.from_numpy(p[n + 1 :])),
                np.concatenate([u0, d0]), query_evals)
    return best[0], best[1]


@torch.no_grad()
def optimize_grid(denoise_fn: DenoiseFn, scheduler: Scheduler, sampler: str, steps: int, knobs: dict[str, Any],
                  shape: tuple[int, ...], *, n: int = 64, seed: int = 0, max_evals: int | None = None,
                  query_evals: int | None = None, reference_steps: int = 200,
                  cond: Any = None, device: torch.device | str = "cpu",
                  embed: Callable[[Tensor], Tensor] | None = None) -> FittedGrid:
    """The optimized grid of a deterministic sampler for this denoiser, with its fitted query levels.

    `max_evals` bounds the sampler runs of the search over the levels (default 20 (steps + 1); 0: best starting
    grid only), `query_evals` those of the joint search with the query levels that follows (default
    20 (2 steps + 1); 0: the denoiser is asked at the levels themselves). `embed` maps samples [n, *shape] to the
    features [n, ...] the error is measured in (default: the samples themselves).
    """
    info = SAMPLERS[sampler]
    if not info.is_deterministic(knobs):
        raise ValueError(f"grid=optimized needs a deterministic sampler; {sampler!r} with {knobs} draws fresh noise")
    sigmas_ref = scheduler.with_grid("logsnr").inference_sigmas(reference_steps)
    z = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(device)
    embed = embed or (lambda x: x)
    x_ref = embed(SAMPLERS["unipc"](denoise_fn, z * scheduler.prior_std(float(sigmas_ref[0])), sigmas_ref, cond=cond,
                                    order=3))

    def run(sig: Tensor, queries: Tensor) -> Tensor:
        fn = shifted_denoiser(denoise_fn, sig[:-1], queries)
        return embed(info.fn(fn, z * scheduler.prior_std(float(sig[0])), sig, cond=cond, **knobs))

    start = min(_starting_grids(scheduler, steps), key=lambda ls: _error(run, ls, x_ref))
    budget = search_budget(steps, max_evals=max_evals, query_evals=query_evals)
    bounds = (math.log(scheduler.sigma_min), math.log(scheduler.sigma_max))
    log_sigmas, log_queries = _search(run, start, x_ref, bounds, budget["max_evals"], budget["query_evals"])
    return FittedGrid(torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)]), log_queries.exp())


def checkpoint_grid_cache(ckpt: str | Path) -> Path:
    """The cache folder of a checkpoint's optimized grids: <ckpt folder>/grids/<ckpt name>-<sha256[:12] of the file>."""
    ckpt = Path(ckpt)
    digest = hashlib.sha256()
    with ckpt.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ckpt.parent / "grids" / f"{ckpt.stem}-{digest.hexdigest()[:12]}"


def search_budget(steps: int, effort: float = 1.0, *, max_evals: int | None = None, query_evals: int | None = None
                  ) -> dict[str, int]:
    """The sampler runs of the two searches: the given ones, else the defaults scaled by `effort`
    (`sampler.grid_effort`): 20 (steps + 1) over the levels, 20 (2 steps + 1) over levels and query levels."""
    return {"max_evals": round(effort * 20 * (steps + 1)) if max_evals is None else max_evals,
            "query_evals": round(effort * 20 * (2 * steps + 1)) if query_evals is None else query_evals}


def cached_optimized_grid(cache: Path | None, denoise_fn: DenoiseFn, scheduler: Scheduler, sampler: str, steps: int,
                          knobs: dict[str, Any], shape: tuple[int, ...], *, n: int = 64, max_evals: int | None = None,
                          query_evals: int | None = None, distance: str = "pixel", **kwargs: Any) -> FittedGrid:
    """`optimize_grid`, read from / written to `cache`/<sampler>-<steps>[-<distance>].json when a cache folder is
    given (keyed by sampler, steps, knobs, scheduler, the fit's sample count and budgets and the `distance` that
    names the `embed` in kwargs: a grid fitted otherwise is refitted)."""
    budget = search_budget(steps, max_evals=max_evals, query_evals=query_evals)
    key = {"version": CACHE_VERSION, "sampler": sampler, "steps": steps, "knobs": knobs, "scheduler": repr(scheduler),
           "fit": {"n": n, **budget, "distance": distance}}
    name = f"{sampler}-{steps}" + ("" if distance == "pixel" else f"-{distance}")
    path = None if cache is None else Path(cache) / f"{name}.json"
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key)):
            return FittedGrid(torch.tensor(stored["sigmas"], dtype=torch.float64),
                              torch.tensor(stored["queries"], dtype=torch.float64))
    fitted = optimize_grid(denoise_fn, scheduler, sampler, steps, knobs, shape, n=n, **budget, **kwargs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "sigmas": fitted.sigmas.tolist(), "queries": fitted.queries.tolist()},
                                  indent=1))
        tmp.replace(path)
    return fitted
