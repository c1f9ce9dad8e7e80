"""DPM-Solver in noise prediction (the original of Lu et al. 2022): the web UI's "DPM2", "DPM2 a" and "DPM fast".

Papers: Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10
Steps", eq. (3.7) (DPM-Solver-1), Algorithm 1 (DPM-Solver-2), Algorithm 2 (DPM-Solver-3), Sec. 3.4 (DPM-Solver-fast:
the order schedule); Karras et al. 2022 (EDM), Algorithm 2 (churn) for DPM2. As k-diffusion's `sample_dpm_2`,
`sample_dpm_2_ancestral` and `sample_dpm_fast`, which the Stable Diffusion web UI runs under those names.

Notation (sigma view x = x0 + sigma eps; lambda = -log sigma, h = lambda_t - lambda_s = log(sigma_s / sigma_t), so
sigma_t (e^h - 1) = sigma_s - sigma_t; every update is the VP one divided by alpha_t):
    eps_s         (x_s - D(x_s, sigma_s)) / sigma_s = d, the ODE direction                           EDM eq. (3)
    sigma_r       exp(-(lambda_s + r h)) = sigma_s^(1 - r) sigma_t^r, the level a fraction r of the step in lambda
    DPM-Solver-1  x_t = x_s + (sigma_t - sigma_s) eps_s                                  eq. (3.7) (DDIM, Euler)
    DPM-Solver-2  u = x_s + (sigma_{r1} - sigma_s) eps_s;  e1 = eps(u, sigma_{r1}) - eps_s                  Alg. 1
                  x_t = x_s + (sigma_t - sigma_s) eps_s - (sigma_s - sigma_t) / (2 r1) e1
                  (r1 = 1/2: x_t = x_s + (sigma_t - sigma_s) eps(u, sigma_{1/2}), the midpoint of DPM2)
    DPM-Solver-3  r1 = 1/3, r2 = 2/3; u1 as u above; e1 = eps(u1, sigma_{r1}) - eps_s                     Alg. 2
                  u2 = x_s + (sigma_{r2} - sigma_s) eps_s - sigma_{r2} (r2 / r1) ((e^{r2 h} - 1) / (r2 h) - 1) e1
                  x_t = x_s + (sigma_t - sigma_s) eps_s - (sigma_t / r2) ((e^h - 1) / h - 1) e2,
                  e2 = eps(u2, sigma_{r2}) - eps_s
    DPM fast      n evaluations: K = floor(n / 3) + 1 steps uniform in lambda from the grid's first level to its
                  smallest positive one, of orders 3, ..., 3 then (2, 1) when 3 divides n, else (n mod 3)   Sec. 3.4
    ancestral     (sd, su) = `ancestral_step(sigma_s, sigma_t, eta)`: the step goes to sd, then su z is added
DPM2's last step to sigma = 0 is an Euler step (x = D): 2 steps - 1 evaluations, as DPM2 a. DPM fast ignores the
grid's inner levels (its steps are its own); a trailing 0 in the grid adds x = D(x, sigma_min): n + 1 evaluations.
The coefficients (float64) are cast to the sample's dtype: these noise-prediction steps cancel x ~ sigma_max against
sigma eps, so a float64 sample keeps float64 coefficients (float32 ones cost 1e-4 relative at 5 steps over DDPM's
range).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import ConfigError
from difflab.samplers.base import (
    DenoiseFn,
    Generator,
    StepCallback,
    ancestral_loop,
    ancestral_step,
    randn_like,
    register,
    sigma_batch,
    to_d,
)
from difflab.samplers.euler import churn_loop


def _eps(denoise_fn: DenoiseFn, x: Tensor, sigma: Tensor, cond: object) -> tuple[Tensor, Tensor]:
    """(eps_hat, x0_hat) at noise level sigma: eps_hat = (x - D) / sigma (EDM eq. 3)."""
    x0 = denoise_fn(x, sigma_batch(sigma, x), cond)
    return to_d(x, x0, sigma), x0


def _level(sigma_s: Tensor, sigma_t: Tensor, r: float) -> Tensor:
    """sigma_r = sigma_s^(1 - r) sigma_t^r: a fraction r of the step in lambda = -log sigma."""
    return (sigma_s.log() * (1 - r) + sigma_t.log() * r).exp()


def dpm_solver_2(denoise_fn: DenoiseFn, x: Tensor, eps_s: Tensor, sigma_s: Tensor, sigma_t: Tensor, cond: object,
                 r1: float = 0.5) -> Tensor:
    """DPM-Solver-2 (Algorithm 1) from sigma_s to sigma_t > 0, given eps_s: one more evaluation."""
    sigma_1 = _level(sigma_s, sigma_t, r1)
    u = x + (sigma_1 - sigma_s).to(x.dtype) * eps_s
    eps_1, _ = _eps(denoise_fn, u, sigma_1, cond)
    return x + (sigma_t - sigma_s).to(x.dtype) * eps_s - ((sigma_s - sigma_t) / (2 * r1)).to(x.dtype) * (eps_1 - eps_s)


def dpm_solver_3(denoise_fn: DenoiseFn, x: Tensor, eps_s: Tensor, sigma_s: Tensor, sigma_t: Tensor, cond: object,
                 r1: float = 1 / 3, r2: float = 2 / 3) -> Tensor:
    """DPM-Solver-3 (Algorithm 2) from sigma_s to sigma_t > 0, given eps_s: two more evaluations."""
    h = (sigma_s / sigma_t).log()
    sigma_1, sigma_2 = _level(sigma_s, sigma_t, r1), _level(sigma_s, sigma_t, r2)
    u1 = x + (sigma_1 - sigma_s).to(x.dtype) * eps_s
    e1 = _eps(denoise_fn, u1, sigma_1, cond)[0] - eps_s
    c2 = sigma_2 * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1)
    u2 = x + (sigma_2 - sigma_s).to(x.dtype) * eps_s - c2.to(x.dtype) * e1
    e2 = _eps(denoise_fn, u2, sigma_2, cond)[0] - eps_s
    return x + (sigma_t - sigma_s).to(x.dtype) * eps_s - (sigma_t / r2 * (torch.expm1(h) / h - 1)).to(x.dtype) * e2


@register("dpm_2", order=2, noise="s_churn")
@torch.no_grad()
def sample_dpm_2(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """DPM2: DPM-Solver-2 steps (midpoint in log sigma) with EDM's churn, Euler on the last step (notation above)."""

    def step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        eps = to_d(x, x0, sigma)
        if sigma_next == 0:  # Euler to sigma = 0
            return x + (sigma_next - sigma).to(x.dtype) * eps
        return dpm_solver_2(denoise_fn, x, eps, sigma, sigma_next, cond)

    return churn_loop(denoise_fn, x, sigmas, step, cond=cond, generator=generator, callback=callback,
                      s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)  # EDM Alg. 2's loop


@register("dpm_2_a", order=2, noise="eta")
@torch.no_grad()
def sample_dpm_2_ancestral(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
) -> Tensor:
    """DPM2 a: a DPM-Solver-2 step down to sigma_down, then fresh noise sigma_up (DDIM eq. 16 with eta)."""

    def step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_down: Tensor) -> Tensor:
        return dpm_solver_2(denoise_fn, x, to_d(x, x0, sigma), sigma, sigma_down, cond)

    return ancestral_loop(denoise_fn, x, sigmas, step, cond=cond, generator=generator, callback=callback, eta=eta,
                          s_noise=s_noise)


def fast_orders(nfe: int) -> list[int]:
    """DPM-Solver-fast's step orders for `nfe` evaluations (Lu et al. 2022, Sec. 3.4): they sum to nfe."""
    if nfe < 1:
        raise ValueError(f"DPM fast needs at least one evaluation, got {nfe}")
    m = nfe // 3 + 1
    return [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]


@register("dpm_fast", order=3, noise="eta")
@torch.no_grad()
def sample_dpm_fast(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, eta: float = 0.0, s_noise: float = 1.0,
) -> Tensor:
    """DPM fast: DPM-Solver-fast with as many evaluations as grid steps, uniform in lambda (notation above)."""
    if eta < 0:
        raise ConfigError.bad_value("sampler.eta", f"{eta} is negative", "Use 0 (DPM-Solver-fast) or 1 (ancestral).")
    positive = sigmas[sigmas > 0]
    orders = fast_orders(len(sigmas) - 1)
    lams = torch.linspace(float(-positive[0].log()), float(-positive[-1].log()), len(orders) + 1, dtype=torch.float64)
    steps = {1: None, 2: dpm_solver_2, 3: dpm_solver_3}
    for i, order in enumerate(orders):
        sigma, sigma_next = (-lams[i]).exp(), (-lams[i + 1]).exp()
        sigma_to, sigma_up = sigma_next, torch.zeros((), dtype=torch.float64)
        if eta > 0:  # go down to sigma_down (not below the last level), then add the rest as noise
            sigma_to = torch.maximum(ancestral_step(sigma, sigma_next, eta)[0], positive[-1])
            sigma_up = (sigma_next**2 - sigma_to**2).sqrt()
        eps, x0 = _eps(denoise_fn, x, sigma, cond)
        step = steps[order]
        if step is None:  # DPM-Solver-1
            x = x + (sigma_to - sigma).to(x.dtype) * eps
        else:
            x = step(denoise_fn, x, eps, sigma, sigma_to, cond)
        if eta > 0:
            x = x + (sigma_up * s_noise).to(x.dtype) * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0})
    if sigmas[-1] == 0:  # final denoising step
        x = denoise_fn(x, sigma_batch(positive[-1], x), cond)
    return x

