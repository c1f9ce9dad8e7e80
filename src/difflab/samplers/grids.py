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

Notation: N = steps, x_T [n, *shape] prior samples from a fixed seed, S_grid the sampler run on `grid`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from difflab.diffusion.schedules import GRIDS, Scheduler, karras_sigmas, logsnr_sigmas
from difflab.samplers.base import SAMPLERS, DenoiseFn

CACHE_VERSION = 2  # 2: joint (Powell) search from raised-last-level starts


def _error(run: Callable[[Tensor], Tensor], log_sigmas: Tensor, x_ref: Tensor) -> float:
    """E(grid) for the positive levels exp(log_sigmas), then 0."""
    sigmas = torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)])
    err = ((run(sigmas) - x_ref).double() ** 2).flatten(1).sum(1).mean()
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
    """Log levels [steps] of the scheduler's own grids and of Karras / log-SNR grids with a raised last level."""
    grids = [g for g in getattr(type(scheduler), "grids", GRIDS) if g != "optimized"]
    out = [scheduler.with_grid(g).inference_sigmas(steps)[:-1].log() for g in grids]
    lo, hi = scheduler.sigma_min, scheduler.sigma_max
    for last in np.geomspace(lo, math.sqrt(lo * hi), 6)[1:]:  # raised last levels, up to the geometric midpoint
        out += [karras_sigmas(steps, float(last), hi, scheduler.rho)[:-1].log(),
                logsnr_sigmas(steps, float(last), hi)[:-1].log()]
    return out


def _joint(run: Callable[[Tensor], Tensor], start: Tensor, x_ref: Tensor, log_min: float, log_max: float,
           max_evals: int) -> tuple[Tensor, float]:
    """Powell's method over the gap logits from `start`; returns the best (log levels, error) evaluated."""
    best = [start, _error(run, start, x_ref)]

    def objective(u: np.ndarray) -> float:
        levels = _levels(u, log_min, log_max)
        err = _error(run, levels, x_ref)
        if err < best[1]:
            best[:] = [levels, err]
        return err if math.isfinite(err) else 1e30

    if max_evals > 0:
        minimize(objective, _logits(start, log_min, log_max), method="Powell",
                 options={"maxfev": max_evals, "xtol": 1e-3, "ftol": 1e-5})
    return best[0], best[1]


@torch.no_grad()
def optimize_sigmas(denoise_fn: DenoiseFn, scheduler: Scheduler, sampler: str, steps: int, knobs: dict[str, Any],
                    shape: tuple[int, ...], *, n: int = 64, seed: int = 0, max_evals: int | None = None,
                    reference_steps: int = 200,
                    cond: Any = None, device: torch.device | str = "cpu") -> Tensor:
    """The optimized grid ([steps + 1], float64, ending at 0) of a deterministic sampler for this denoiser.

    `max_evals` bounds the sampler runs of the joint search (default 20 (steps + 1); 0: best starting grid only).
    """
    info = SAMPLERS[sampler]
    if not info.is_deterministic(knobs):
        raise ValueError(f"grid=optimized needs a deterministic sampler; {sampler!r} with {knobs} draws fresh noise")
    sigmas_ref = scheduler.with_grid("logsnr").inference_sigmas(reference_steps)
    z = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(device)
    x_ref = SAMPLERS["unipc"](denoise_fn, z * scheduler.prior_std(float(sigmas_ref[0])), sigmas_ref, cond=cond, order=3)

    def run(sig: Tensor) -> Tensor:
        return info.fn(denoise_fn, z * scheduler.prior_std(float(sig[0])), sig, cond=cond, **knobs)

    start = min(_starting_grids(scheduler, steps), key=lambda ls: _error(run, ls, x_ref))
    budget = 20 * (steps + 1) if max_evals is None else max_evals
    log_sigmas, _ = _joint(run, start, x_ref, math.log(scheduler.sigma_min), math.log(scheduler.sigma_max), budget)
    return torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)])


def checkpoint_grid_cache(ckpt: str | Path) -> Path:
    """The cache folder of a checkpoint's optimized grids: <ckpt folder>/grids/<ckpt name>-<sha256[:12] of the file>."""
    ckpt = Path(ckpt)
    digest = hashlib.sha256()
    with ckpt.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ckpt.parent / "grids" / f"{ckpt.stem}-{digest.hexdigest()[:12]}"


def cached_optimized_sigmas(cache: Path | None, denoise_fn: DenoiseFn, scheduler: Scheduler, sampler: str, steps: int,
                            knobs: dict[str, Any], shape: tuple[int, ...], **kwargs: Any) -> Tensor:
    """`optimize_sigmas`, read from / written to `cache`/<sampler>-<steps>.json when a cache folder is given."""
    key = {"version": CACHE_VERSION, "sampler": sampler, "steps": steps, "knobs": knobs, "scheduler": repr(scheduler)}
    path = None if cache is None else Path(cache) / f"{sampler}-{steps}.json"
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key)):
            return torch.tensor(stored["sigmas"], dtype=torch.float64)
    sigmas = optimize_sigmas(denoise_fn, scheduler, sampler, steps, knobs, shape, **kwargs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "sigmas": sigmas.tolist()}, indent=1))
        tmp.replace(path)
    return sigmas
