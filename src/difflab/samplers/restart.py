"""Restart sampling: Heun's ODE steps, with K returns to a higher noise level on the way (the web UI's "Restart").

Paper: Xu et al. 2023, "Restart Sampling for Improving Generative Processes", Algorithm 1: solve the probability-flow
ODE down to t_min, then K times add forward noise from t_min up to t_max and solve the ODE back down to t_min, then
solve on to the end. The forward noise contracts the errors the ODE steps accumulated above t_min; with the exact
denoiser the marginal at t_min is kept (the noise is the forward process, the ODE its exact transport).

Notation (sigma view; Heun = EDM Algorithm 1, Euler on a step to sigma = 0, `sample_heun`):
    sigma_lo, sigma_hi   the grid levels nearest `restart_min` and `restart_max` (as the web UI snaps them)
    main                 Heun on the grid from sigmas[0] to sigma_lo, then (after the restarts) from sigma_lo on
    restart (K times)    x <- x + s_noise sqrt(sigma_hi^2 - sigma_lo^2) z                       Alg. 1, line 5
                         x <- Heun on karras_sigmas(int(restart_steps) + 1, sigma_lo, sigma_hi)[:-1]   Alg. 1, line 6
                         (restart_steps Heun steps on the EDM eq. (5) grid from sigma_hi to sigma_lo, rho = 7)
Evaluations: 2 steps - 1 + 2 K restart_steps. The web UI chooses K and the restart steps from its step count and
replaces the grid by a Karras one of fewer levels (steps >= 20: 9 restart steps, K = 1; >= 36: steps // 4, K = 2;
< 20: no restart); here the grid is the scheduler's (or `sampler.grid`) and the restarts come on top of it, so
`restart_times=0` is exactly `heun`. No reference package implements it (k-diffusion and diffusers have no
Restart sampler): tests/unit/samplers/test_new_samplers.py checks Algorithm 1 on the exact Gaussian and mixture
denoisers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.diffusion.schedules import karras_sigmas
from difflab.errors import ConfigError
from difflab.samplers.base import DenoiseFn, Generator, StepCallback, randn_like, register
from difflab.samplers.euler import sample_heun


def _reindexed(callback: StepCallback | None, index: Callable[[int], int]) -> StepCallback | None:
    """The callback with each step's index `i` reported as `index(i)` (its place among the grid's steps)."""
    return None if callback is None else (lambda info: callback({**info, "i": index(int(info["i"]))}))


def _check(restart_min: float, restart_max: float, restart_steps: int, restart_times: int) -> None:
    """ConfigError naming the first knob out of its range."""
    if not 0 < restart_min < restart_max:
        raise ConfigError.bad_value("sampler.restart_min", f"need 0 < restart_min < restart_max, got {restart_min} and "
                                    f"{restart_max}", "The web UI uses restart_min=0.1 restart_max=2.")
    if int(restart_steps) != restart_steps or restart_steps < 1:
        raise ConfigError.bad_value("sampler.restart_steps", f"{restart_steps} is not a positive whole number of Heun "
                                    "steps", "The web UI uses 9.")
    if int(restart_times) != restart_times or restart_times < 0:
        raise ConfigError.bad_value("sampler.restart_times", f"{restart_times} is not a whole number >= 0",
                                    "Use 1 or 2 (the web UI's), or 0 for plain Heun.")


@register("restart", order=2, noise="restart_times")
@torch.no_grad()
def sample_restart(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, restart_min: float = 0.1, restart_max: float = 2.0, restart_steps: int = 9,
    restart_times: int = 1, s_noise: float = 1.0,
) -> Tensor:
    """Restart sampling (Xu et al. 2023, Algorithm 1) on the grid: Heun, K restarts between the levels nearest
    restart_min and restart_max (notation above)."""
    _check(restart_min, restart_max, restart_steps, restart_times)
    positive = sigmas[sigmas > 0]
    lo = int((positive - restart_min).abs().argmin())
    hi = int((positive - restart_max).abs().argmin())
    if restart_times > 0 and hi >= lo:
        raise ConfigError.bad_value("sampler.restart_max", f"the grid levels nearest restart_min={restart_min} and "
                                    f"restart_max={restart_max} are one level ({float(positive[lo]):.4g}): no interval "
                                    "to restart in", "Use more steps, a restart_max further from restart_min, or "
                                    "restart_times=0 (plain Heun).")
    x = sample_heun(denoise_fn, x, sigmas[: lo + 1], cond=cond, callback=callback)
    sub = karras_sigmas(int(restart_steps) + 1, float(positive[lo]), float(positive[hi]))[:-1]
    for _ in range(int(restart_times)):
        x = x + ((positive[hi] ** 2 - positive[lo] ** 2).sqrt() * s_noise).float() * randn_like(x, generator)
        x = sample_heun(denoise_fn, x, sub, cond=cond, callback=_reindexed(callback, lambda i: lo - 1))
    return sample_heun(denoise_fn, x, sigmas[lo:], cond=cond, callback=_reindexed(callback, lambda i: i + lo))
