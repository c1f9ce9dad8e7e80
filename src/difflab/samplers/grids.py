"""Optimized noise-level grids: for one model, sampler and step count, the levels that minimise a measured error.

In the spirit of Sabour et al. 2024, "Align Your Steps" (AYS): rather than a fixed rule (Karras, log-SNR, timestep
spacings), the grid is fitted to the model. AYS minimises a KL upper bound by stochastic optimisation; here the
objective is the discretisation error itself, measured against a fine reference solve from the same starting points:

    E(grid) = mean_i ||S_grid(x_T^i) - x_ref^i||^2,   x_ref = UniPC(3) with `reference_steps` on the log-SNR grid
    grid    = (s_0, ..., s_{N-1}, 0),  sigma_max >= s_0 > ... > s_{N-1} >= sigma_min; x_T = z * prior_std(s_0), the
              same standard-normal z for every grid (as `generate` starts any grid)

Minimised by coordinate descent in log sigma (each level moved towards either neighbour by a shrinking fraction of
the gap, kept if E drops), from the best of the scheduler's own grids (Karras, log-SNR, its timestep spacings);
so the result is never worse than any of them on the measured samples. Deterministic samplers only (the error of one path is defined for them alone).

Notation: N = steps, x_T [n, *shape] prior samples from a fixed seed, S_grid the sampler run on `grid`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.schedules import GRIDS, Scheduler
from difflab.samplers.base import SAMPLERS, DenoiseFn

CACHE_VERSION = 1


def _error(run: Callable[[Tensor], Tensor], log_sigmas: Tensor, x_ref: Tensor) -> float:
    """E(grid) for the positive levels exp(log_sigmas), then 0."""
    sigmas = torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)])
    err = ((run(sigmas) - x_ref).double() ** 2).flatten(1).sum(1).mean()
    return float(err) if torch.isfinite(err) else math.inf


def _descend(run: Callable[[Tensor], Tensor], log_sigmas: Tensor, x_ref: Tensor, log_min: float, log_max: float,
             sweeps: int) -> tuple[Tensor, float]:
    """Coordinate descent over the levels (module docstring); returns (log levels, error)."""
    best = _error(run, log_sigmas, x_ref)
    for sweep in range(sweeps):
        frac = 0.5 / 2**sweep
        for k in range(len(log_sigmas)):
            upper = log_sigmas[k - 1] if k > 0 else torch.tensor(log_max, dtype=torch.float64)
            lower = log_sigmas[k + 1] if k + 1 < len(log_sigmas) else torch.tensor(log_min, dtype=torch.float64)
            for target in (upper, lower):
                trial = log_sigmas.clone()
                trial[k] = log_sigmas[k] + frac * (target - log_sigmas[k])
                err = _error(run, trial, x_ref)
                if err < best:
                    log_sigmas, best = trial, err
                    break
    return log_sigmas, best


@torch.no_grad()
def optimize_sigmas(denoise_fn: DenoiseFn, scheduler: Scheduler, sampler: str, steps: int, knobs: dict[str, Any],
                    shape: tuple[int, ...], *, n: int = 64, seed: int = 0, sweeps: int = 3, reference_steps: int = 200,
                    cond: Any = None, device: torch.device | str = "cpu") -> Tensor:
    """The optimized grid ([steps + 1], float64, ending at 0) of a deterministic sampler for this denoiser."""
    info = SAMPLERS[sampler]
    if not info.is_deterministic(knobs):
        raise ValueError(f"grid=optimized needs a deterministic sampler; {sampler!r} with {knobs} draws fresh noise")
    grids = [g for g in getattr(type(scheduler), "grids", GRIDS) if g != "optimized"]
    starts = [scheduler.with_grid(g).inference_sigmas(steps)[:-1].log() for g in grids]
    sigmas_ref = scheduler.with_grid("logsnr").inference_sigmas(reference_steps)
    z = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(device)
    x_ref = SAMPLERS["unipc"](denoise_fn, z * scheduler.prior_std(float(sigmas_ref[0])), sigmas_ref, cond=cond, order=3)

    def run(sig: Tensor) -> Tensor:
        return info.fn(denoise_fn, z * scheduler.prior_std(float(sig[0])), sig, cond=cond, **knobs)

    start = min(starts, key=lambda ls: _error(run, ls, x_ref))
    log_sigmas, _ = _descend(run, start, x_ref, math.log(scheduler.sigma_min), math.log(scheduler.sigma_max), sweeps)
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
