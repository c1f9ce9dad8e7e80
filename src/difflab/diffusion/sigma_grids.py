"""Noise-level grids picked by name beside a sampler (the web UI's "schedule types"): Align Your Steps, SGM uniform
and beta. Karras (EDM eq. 5), the exponential / log-SNR grid and the timestep spacings (simple too) are in
`schedules.py`.

Papers and references (each grid's test compares it with the reference named here, tests/unit/samplers/test_grids.py):
    ays          Sabour et al. 2024, "Align Your Steps": the published 10-step levels of Stable Diffusion 1.5 and SDXL
                 (diffusers' `AysSchedules`), log-linearly interpolated for other step counts as NVIDIA's how-to does:
                 the 11 levels (ending at sigma_min = 0.029) resampled to steps + 1 points uniform in their index, in
                 log sigma, the last replaced by 0. At 10 steps: the published levels.
    sgm_uniform  Stability's SGM sampling (the web UI's "SGM Uniform"): steps + 1 points uniform in the scheduler's
                 time from time(sigma_max) to time(sigma_min), the last dropped, then 0. The time is the network's noise
                 input c_noise (the fractional timestep of a discrete VP schedule, as k-diffusion's `sigma_to_t`;
                 999 t for the VP SDEs, 1000 t for flow matching, ln(sigma) / 4 for EDM, as ComfyUI's).
    simple       the web UI's / ComfyUI's "simple": every (T / steps)-th of the T training levels from the top,
                 sigmas[T - 1 - floor(i T / steps)] for i < steps, then 0: a timestep spacing of discrete schedules
                 (`schedules.discrete_timesteps`, beside leading / trailing / linspace).
    beta         Lee et al. 2024, "Beta Sampling is All You Need", as the web UI and diffusers (`use_beta_sigmas`)
                 apply it: sigma_min + F^{-1}(1 - i / (steps - 1)) (sigma_max - sigma_min) with F the Beta(0.6, 0.6)
                 CDF, linear in sigma (the paper spaces timesteps), then 0.
The web UI's "Exponential" and "Polyexponential" (at its default rho = 1, where k-diffusion's
`get_sigmas_polyexponential` is `get_sigmas_exponential`) are difflab's `logsnr` grid (`schedules.logsnr_sigmas`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import beta as beta_distribution
from torch import Tensor

from difflab.errors import ConfigError

# Sabour et al. 2024, as published (NVIDIA's how-to; diffusers' AysSchedules): 10 steps, then sigma_min.
AYS_LEVELS: dict[str, tuple[float, ...]] = {
    "ays": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),  # Stable Diffusion 1.5
    "ays_sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),  # SDXL
}
BETA_AB = (0.6, 0.6)  # the web UI's and diffusers' default Beta(alpha, beta)


def _with_zero(levels: Tensor) -> Tensor:
    return torch.cat([levels, levels.new_zeros(1)])


def check_ays_range(grid: str, sigma_min: float, sigma_max: float) -> None:
    """ConfigError when the published levels of Align Your Steps `grid` leave the range [sigma_min, sigma_max], up to
    their rounding to 3 decimals (Stable Diffusion's own range is [0.02917, 14.6146])."""
    top, bottom = AYS_LEVELS[grid][0], AYS_LEVELS[grid][-1]
    if bottom < sigma_min - 5e-4 or top > sigma_max + 5e-4:
        raise ConfigError.bad_value("sampler.grid", f"{grid}'s published levels {top} .. {bottom} leave this "
                                    f"scheduler's noise range [{sigma_min:.4g}, {sigma_max:.4g}]",
                                    "Use a grid built from the scheduler's range: karras, logsnr, sgm_uniform or beta.")


def ays_sigmas(steps: int, grid: str, sigma_min: float, sigma_max: float) -> Tensor:
    """Align Your Steps levels for `steps` steps ([steps + 1], float64, ending at 0); ConfigError when the published
    levels leave the scheduler's range [sigma_min, sigma_max]."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    check_ays_range(grid, sigma_min, sigma_max)
    levels = np.array(AYS_LEVELS[grid], dtype=np.float64)
    if steps + 1 != len(levels):  # log-linear in the index (NVIDIA's `loglinear_interp`)
        index = np.linspace(0, 1, len(levels))
        levels = np.exp(np.interp(np.linspace(0, 1, steps + 1), index, np.log(levels[::-1]))[::-1])
    return _with_zero(torch.tensor(levels[:-1].copy(), dtype=torch.float64))


def time_uniform_sigmas(steps: int, sigma_min: float, sigma_max: float, time: Callable[[Tensor], Tensor]) -> Tensor:
    """SGM uniform: steps + 1 points uniform in time(sigma) from sigma_max to sigma_min, the last dropped, then 0
    ([steps + 1], float64); `time` is increasing, inverted by bisection in log sigma (to float64 precision)."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    ends = time(torch.tensor([sigma_max, sigma_min], dtype=torch.float64))
    target = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=torch.float64)[:-1]
    lo = torch.full_like(target, math.log(sigma_min))
    hi = torch.full_like(target, math.log(sigma_max))
    for _ in range(64):  # each halves [lo, hi]: 2^-64 of the log range
        mid = (lo + hi) / 2
        below = time(mid.exp()) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    levels = ((lo + hi) / 2).exp()
    levels[0] = sigma_max
    return _with_zero(levels)


def beta_sigmas(steps: int, sigma_min: float, sigma_max: float, a: float = BETA_AB[0], b: float = BETA_AB[1]) -> Tensor:
    """Beta grid: sigma_min + ppf(1 - i / (steps - 1)) (sigma_max - sigma_min), i < steps, then 0 ([steps + 1])."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    quantiles = beta_distribution.ppf(1 - np.linspace(0, 1, steps), a, b)
    return _with_zero(torch.tensor(sigma_min + quantiles * (sigma_max - sigma_min), dtype=torch.float64))
