"""DDPM ancestral sampling and DDIM.

Papers: Ho et al. 2020 (DDPM, Algorithm 2, eqs. 6-7); Song et al. 2021 (DDIM, eqs. 12 and 16).

Notation (sigma view, x = x_vp / sqrt(alpha_bar), see diffusion/schedules.py):
    s, s_next     current and next noise level (grid entries, float64)
    x0            D(x, s): the denoised estimate
    eps           (x - x0) / s: the implied noise
    posterior     q(x_next | x, x0) = N(x0 + (s_next^2 / s^2)(x - x0), s_next^2 (s^2 - s_next^2) / s^2)
                  (DDPM eq. 7 divided by sqrt(alpha_bar_prev); valid for any s_next < s, so respaced grids work)
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import (
    ALWAYS,
    DenoiseFn,
    Generator,
    StepCallback,
    ancestral_step,
    randn_like,
    register,
    sigma_batch,
    to_d,
)


@register("ddpm", order=1, noise=ALWAYS)
@torch.no_grad()
def sample_ddpm(
    denoise_fn: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: object = None,
    generator: Generator = None,
    callback: StepCallback | None = None,
    variance: str = "small",
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with sigma_t^2 = beta_tilde ("small") or beta ("large").

    "small" is the posterior variance of any process in the sigma view; "large" (beta_t) is defined by
    the VP process only, so use it with VP-trained models.
    """
    if variance not in ("small", "large"):
        raise ValueError(f"DDPM variance must be 'small' or 'large', got {variance!r}")
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(s, x), cond)
        # DDPM eq. (7): posterior mean mu_tilde(x_t, x0) in the sigma view
        x_mean = x0 + (s_next**2 / s**2).float() * (x - x0)
        if s_next > 0:
            if variance == "small":  # beta_tilde_t = (1 - a_prev)/(1 - a_t) beta_t, eq. (7)
                std = s_next * (s**2 - s_next**2).sqrt() / s
            else:  # beta_t = 1 - a_t / a_prev, divided by a_prev
                std = ((1 + s_next**2) * (s**2 - s_next**2) / (1 + s**2)).sqrt()
            x = x_mean + std.float() * randn_like(x, generator)
        else:  # last step: DDPM Algorithm 2 adds no noise at t = 1
            x = x_mean
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": x0})
    return x


@register("ddim", order=1, noise="eta")
@torch.no_grad()
def sample_ddim(
    denoise_fn: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: object = None,
    generator: Generator = None,
    callback: StepCallback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): eta = 0 is the deterministic ODE-like sampler, eta = 1 is DDPM."""
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(s, x), cond)
        eps = to_d(x, x0, s)  # the implied noise
        sigma_down, sigma_up = ancestral_step(s, s_next, eta)
        # DDIM eq. (12) / sqrt(alpha_bar_prev): x_prev = x0 + sqrt(s_next^2 - s_up^2) eps + s_up z
        x = x0 + sigma_down.float() * eps
        if sigma_up > 0:
            x = x + sigma_up.float() * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": x0})
    return x
