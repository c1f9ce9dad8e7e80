"""DPM-Solver++ single-step second-order samplers: the reverse SDE (web UI "DPM++ SDE") and 2S ancestral ("DPM++ 2S a").

Papers: Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
Algorithm 1 (DPM-Solver++(2S), the single-step second-order update in data prediction, intermediate point at
ratio r of the step in lambda); its stochastic form as in k-diffusion's `sample_dpmpp_sde` and diffusers'
`DPMSolverSDEScheduler`: each of the two stages is an ancestral step (DDIM eq. 16 with eta), and the two noises
are increments of one Brownian path in sigma, so the second stage's noise contains the first one's.

Notation (sigma view, x = x0 + sigma * eps, lambda = -log sigma):
    s_i, s_{i+1}   current and next level; h = lambda_{i+1} - lambda_i
    s_mid          exp(-(lambda_i + r h)) = s_i^(1 - r) s_{i+1}^r, the intermediate level            Alg. 1, line 3
    (sd, su)       `ancestral_step(s_from, s_to, eta)`: sd^2 + su^2 = s_to^2                          DDIM eq. (16)
    stage 1        x_mid = D_i + (sd/s_i)(x_i - D_i) + su z_1,       (sd, su) = ancestral_step(s_i, s_mid)
    stage 2        D_d = (1 - 1/(2r)) D_i + 1/(2r) D(x_mid, s_mid)                                    Alg. 1, line 5
                   x_{i+1} = D_d + (sd/s_i)(x_i - D_d) + su n_2,     (sd, su) = ancestral_step(s_i, s_{i+1})
    noise          W a Brownian path in sigma: z_1 = (W(s_i) - W(s_mid)) / sqrt(a), n_2 = (W(s_i) - W(s_{i+1})) /
                   sqrt(a + b), a = s_i - s_mid, b = s_mid - s_{i+1}; so n_2 = (sqrt(a) z_1 + sqrt(b) z_2) / sqrt(a + b)
                   with z_1, z_2 independent standard normals (per image, from its own generator)
The last step to sigma = 0 is an Euler step (x = D_i): 2 * steps - 1 evaluations. eta = 0 gives the deterministic
DPM-Solver++(2S) (order 2); with eta > 0 the strong order is that of the SDE solver (1).

DPM++ 2S a (k-diffusion's `sample_dpmpp_2s_ancestral`): each step is a deterministic DPM-Solver++(2S) step (r = 1/2)
from s_i down to sd, (sd, su) = ancestral_step(s_i, s_{i+1}, eta), then su z with a fresh normal z:
    x_mid = D_i + (s_mid / s_i)(x_i - D_i),  s_mid = sqrt(s_i sd);  x_{i+1} = D_mid + (sd / s_i)(x_i - D_mid) + su z
with D_mid = D(x_mid, s_mid) (Alg. 1 with r = 1/2, where D_d = D_mid). Euler (x = D_i) on the last step; eta = 0
is DPM-Solver++(2S) again, as `dpmpp_sde` with eta = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import (
    DenoiseFn,
    Generator,
    StepCallback,
    ancestral_loop,
    ancestral_step,
    randn_like,
    register,
    sigma_batch,
)


def _ddim_to(x: Tensor, x0: Tensor, sigma: Tensor, sigma_to: Tensor, eta: float, noise: Tensor | None) -> Tensor:
    """One ancestral (DDIM eq. 16) step of x at `sigma` towards `sigma_to` with the data prediction x0."""
    sigma_down, sigma_up = ancestral_step(sigma, sigma_to, eta)
    x = x0 + (sigma_down / sigma).float() * (x - x0)
    return x if noise is None else x + sigma_up.float() * noise


@register("dpmpp_sde", order=2, noise="eta")
@torch.no_grad()
def sample_dpmpp_sde(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
) -> Tensor:
    """DPM-Solver++ SDE (single-step, 2 evaluations per step, Euler on the last step; notation above)."""
    if not 0 < r <= 1:
        raise ValueError(f"dpmpp_sde needs 0 < r <= 1 (the intermediate point's ratio of the step), got {r}")
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(sigma, x), cond)
        if sigma_next == 0:
            x = x0  # Euler to sigma = 0: x + (0 - sigma) (x - x0) / sigma
        else:
            sigma_mid = sigma ** (1 - r) * sigma_next**r
            z1, z2 = (randn_like(x, generator), randn_like(x, generator)) if eta > 0 else (None, None)
            x_mid = _ddim_to(x, x0, sigma, sigma_mid, eta, None if z1 is None else s_noise * z1)
            x0_mid = denoise_fn(x_mid, sigma_batch(sigma_mid, x_mid), cond)
            fac = 1 / (2 * r)
            x0_d = (1 - fac) * x0 + fac * x0_mid
            n2 = None
            if z1 is not None:
                a, b = sigma - sigma_mid, sigma_mid - sigma_next
                n2 = s_noise * ((a.sqrt() * z1 + b.sqrt() * z2) / (a + b).sqrt()).float()
            x = _ddim_to(x, x0_d, sigma, sigma_next, eta, n2)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0})
    return x


@register("dpmpp_2s_a", order=2, noise="eta")
@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
) -> Tensor:
    """DPM++ 2S a: a DPM-Solver++(2S) step down to sigma_down, then fresh noise sigma_up (notation above)."""

    def step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_down: Tensor) -> Tensor:
        sigma_mid = (sigma * sigma_down).sqrt()
        x_mid = _ddim_to(x, x0, sigma, sigma_mid, 0.0, None)
        return _ddim_to(x, denoise_fn(x_mid, sigma_batch(sigma_mid, x_mid), cond), sigma, sigma_down, 0.0, None)

    return ancestral_loop(denoise_fn, x, sigmas, step, cond=cond, generator=generator, callback=callback, eta=eta,
                          s_noise=s_noise)
