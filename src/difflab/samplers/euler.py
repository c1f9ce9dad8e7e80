"""Euler, Heun (EDM) and Euler-ancestral samplers of the probability-flow ODE / reverse SDE.

Papers: Karras et al. 2022 (EDM), Algorithm 1 (deterministic) and Algorithm 2 (stochastic, "churn");
Song et al. 2021 (probability-flow ODE); Song et al. 2021 (DDIM) for the ancestral step.

Notation (sigma view, x = x0 + sigma * eps):
    d            (x - D(x, sigma)) / sigma, the ODE direction dx/dsigma           EDM eq. (3)
    gamma        churn: sigma_hat = sigma (1 + gamma), fresh noise lifts x from sigma to sigma_hat
    S_churn, S_tmin, S_tmax, S_noise    EDM Algorithm 2's knobs (S_churn = 0: deterministic)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from difflab.samplers.ancestral import sample_ddim
from difflab.samplers.base import (
    DenoiseFn,
    Generator,
    StepCallback,
    randn_like,
    register,
    sigma_batch,
    to_d,
)


def churn(x: Tensor, sigma: Tensor, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
           generator: Generator) -> tuple[Tensor, Tensor]:
    """EDM Algorithm 2, lines 4-6: raise the noise level to sigma_hat = sigma (1 + gamma) with fresh noise."""
    gamma = min(s_churn / n_steps, math.sqrt(2) - 1) if s_tmin <= float(sigma) <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    x_hat = x + ((sigma_hat**2 - sigma**2).sqrt() * s_noise).float() * randn_like(x, generator)
    return x_hat, sigma_hat


def churn_loop(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, step: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], *,
    cond: object, generator: Generator, callback: StepCallback | None, s_churn: float, s_tmin: float, s_tmax: float,
    s_noise: float,
) -> Tensor:
    """EDM Algorithm 2's outer loop, shared by the samplers with churn: lift x to sigma_hat (lines 4-6), one denoiser
    call there, then `step(x_hat, x0_hat, sigma_hat, sigma_next)` to the next level; the callback sees sigma_hat."""
    n = len(sigmas) - 1
    for i in range(n):
        x_hat, sigma_hat = churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        sigma_next = sigmas[i + 1]
        x0 = denoise_fn(x_hat, sigma_batch(sigma_hat, x_hat), cond)
        x = step(x_hat, x0, sigma_hat, sigma_next)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma_hat, "sigma_next": sigma_next, "denoised": x0})
    return x


@register("euler", order=1, noise="s_churn")
@torch.no_grad()
def sample_euler(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps of the probability-flow ODE (EDM Algorithm 1 without the Heun correction), optional churn."""

    def step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return x + (sigma_next - sigma).float() * to_d(x, x0, sigma)  # EDM eq. (3)

    return churn_loop(denoise_fn, x, sigmas, step, cond=cond, generator=generator, callback=callback,
                      s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@register("heun", order=2, noise="s_churn")
@torch.no_grad()
def sample_heun(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """EDM Algorithm 2: Heun's 2nd-order method (Euler at the last step to sigma = 0); 2N - 1 evaluations."""

    def step(x_hat: Tensor, x0: Tensor, sigma_hat: Tensor, sigma_next: Tensor) -> Tensor:
        d = to_d(x_hat, x0, sigma_hat)  # line 7
        x = x_hat + (sigma_next - sigma_hat).float() * d  # line 8
        if sigma_next > 0:  # lines 9-11: second-order correction
            x0_next = denoise_fn(x, sigma_batch(sigma_next, x), cond)
            d_next = to_d(x, x0_next, sigma_next)
            x = x_hat + (sigma_next - sigma_hat).float() * (0.5 * d + 0.5 * d_next)
        return x

    return churn_loop(denoise_fn, x, sigmas, step, cond=cond, generator=generator, callback=callback,
                      s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@register("euler_a", order=1, noise="eta")
@torch.no_grad()
def sample_euler_ancestral(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, eta: float = 1.0,
) -> Tensor:
    """Euler-ancestral: an Euler step down to sigma_down plus fresh noise sigma_up.

    In the sigma view x + (sigma_down - sigma) d = x0 + sigma_down * eps_hat, which is exactly the DDIM
    step with this eta, so the arithmetic lives once, in `sample_ddim`.
    """
    return sample_ddim(denoise_fn, x, sigmas, cond=cond, generator=generator, callback=callback, eta=eta)
