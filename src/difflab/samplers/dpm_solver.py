"""DPM-Solver++ multistep solvers, 2M / 3M, of the probability-flow ODE and of the reverse SDE, in data prediction.

Papers: Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
Algorithm 2 (multistep second order) and Appendix B (third order); Lu et al. 2022, "DPM-Solver", eq. (3.7)
(multistep differences); Gonzalez et al. 2023 / the SDE-DPM-Solver++ of Lu et al. 2022 Appendix for the
stochastic variants (exact in the linear part, fresh noise s_{i+1} sqrt(1 - e^{-2h}) z).

Notation (sigma view, x = x0 + sigma * eps; for VP models lambda = log(alpha / sigma_vp) = -log sigma, and every
update below is the VP update divided by alpha_{i+1}):
    lam_i, h     lambda_i = -log sigma_i, h = lambda_{i+1} - lambda_i
    h_0, h_1     lambda_i - lambda_{i-1}, lambda_{i-1} - lambda_{i-2};  r0 = h_0 / h, r1 = h_1 / h
    m0, m1, m2   D(x_i, sigma_i), D(x_{i-1}, sigma_{i-1}), D(x_{i-2}, sigma_{i-2}): data predictions
    D1, D2       first and second divided differences of the data prediction in lambda, scaled by h, h^2
    ODE update   x_{i+1} = (s_{i+1}/s_i) x_i - (e^{-h} - 1) m0 + c1 D1 - c2 D2                    (B.5)
                 2M: D1 = (m0 - m1) / r0, c1 = -(e^{-h} - 1) / 2                              Alg. 2, line 6
                 3M: D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1),
                     c1 = (e^{-h} - 1)/h + 1, c2 = (e^{-h} - 1 + h)/h^2 - 1/2                   App. B, eq. (B.7)
    SDE update   x_{i+1} = (s_{i+1}/s_i) e^{-h} x_i + (1 - e^{-2h}) m0 + c1 D1 + c2 D2 + s_{i+1} sqrt(1 - e^{-2h}) z
                 2M: c1 = (1 - e^{-2h}) / 2;  3M: c1 = (1 - e^{-2h})/(-2h) + 1, c2 = (1 - e^{-2h} - 2h)/(2h)^2 + 1/2
                 (c2 h^2 = int_0^h 2 e^{-2(h-u)} u^2/2 du, the Taylor term of the data prediction, as k-diffusion's
                 -phi_3; diffusers' third-order sde-dpmsolver++ has -1/2 there, which does not vanish as h -> 0 and
                 diverges on DDPM's leading grid and the flow grid: tests/unit/samplers/test_multistep_samplers.py)
    Heun 2M      the 2M update with 3M's c1 (the first divided difference integrated exactly instead of at the
                 midpoint): ODE c1 = (e^{-h} - 1)/h + 1, SDE c1 = (1 - e^{-2h})/(-2h) + 1; diffusers'
                 solver_type="heun", k-diffusion's `sample_dpmpp_2m_sde(solver_type="heun")`, the web UI's
                 "DPM++ 2M SDE Heun"
The last step to sigma = 0 (h = infinity) is x = m0. With fewer than 15 steps the step before it falls back to
second order (`lower_order_final`, as in diffusers, for stability).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import ALWAYS, DenoiseFn, Generator, StepCallback, randn_like, register, sigma_batch


def _differences(ms: list[Tensor], lams: list[Tensor], lam_next: Tensor, order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(m0, D1, D2) of DPM-Solver++ order 1-3 from the newest-last history (notation above)."""
    m0 = ms[-1]
    if order == 1:
        return m0, None, None
    h, h_0 = lam_next - lams[-1], lams[-1] - lams[-2]
    r0 = h_0 / h
    d1_0 = (m0 - ms[-2]) / r0.float()
    if order == 2:
        return m0, d1_0, None
    r1 = (lams[-2] - lams[-3]) / h
    d1_1 = (ms[-2] - ms[-3]) / r1.float()
    d1 = d1_0 + (r0 / (r0 + r1)).float() * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1).float()
    return m0, d1, d2


def dpmpp_update(x: Tensor, ms: list[Tensor], lams: list[Tensor], sigma: Tensor, sigma_next: Tensor, order: int,
                 noise: Tensor | None = None, heun: bool = False) -> Tensor:
    """One DPM-Solver++ step of `order` (1-3) from sigma to sigma_next > 0; SDE variant when `noise` is given;
    `heun`: the Heun 2M coefficient at order 2 (notation above)."""
    midpoint = order == 2 and not heun
    lam_next = -sigma_next.log()
    h = lam_next - lams[-1]
    m0, d1, d2 = _differences(ms, lams, lam_next, order)
    if noise is None:  # eq. (B.5) / Algorithm 2
        x = (sigma_next / sigma).float() * x - torch.expm1(-h).float() * m0
        if d1 is not None:
            c1 = -0.5 * torch.expm1(-h) if midpoint else torch.expm1(-h) / h + 1
            x = x + c1.float() * d1
        if d2 is not None:
            x = x - ((torch.expm1(-h) + h) / h**2 - 0.5).float() * d2
        return x
    one_minus = -torch.expm1(-2 * h)  # 1 - e^{-2h}
    x = (sigma_next / sigma * torch.exp(-h)).float() * x + one_minus.float() * m0
    if d1 is not None:
        c1 = 0.5 * one_minus if midpoint else one_minus / (-2 * h) + 1
        x = x + c1.float() * d1
    if d2 is not None:
        x = x + ((one_minus - 2 * h) / (2 * h) ** 2 + 0.5).float() * d2
    return x + (sigma_next * one_minus.sqrt()).float() * noise


def dpmpp_multistep(denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, order: int, sde: bool, cond: object,
                    generator: Generator, callback: StepCallback | None, lower_order_final: bool,
                    heun: bool = False) -> Tensor:
    """DPM-Solver++(kM) loop: warm-up with lower orders, x = D at sigma = 0, optional second-order penultimate step."""
    n = len(sigmas) - 1
    ms: list[Tensor] = []
    lams: list[Tensor] = []
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(sigma, x), cond)
        ms, lams = (ms + [x0])[-order:], (lams + [-sigma.log()])[-order:]
        noise = randn_like(x, generator) if sde else None  # one draw per step, as diffusers' loop
        if sigma_next == 0:
            x = x0
        else:
            k = min(order, len(ms))
            if lower_order_final and n < 15 and i == n - 2:
                k = min(k, 2)
            x = dpmpp_update(x, ms, lams, sigma, sigma_next, k, noise, heun)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0})
    return x


@register("dpmpp_2m", order=2)
@torch.no_grad()
def sample_dpmpp_2m(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2); first-order first step, x = D at sigma = 0."""
    return dpmpp_multistep(denoise_fn, x, sigmas, order=2, sde=False, cond=cond, generator=generator,
                           callback=callback, lower_order_final=True)


@register("dpmpp_3m", order=3)
@torch.no_grad()
def sample_dpmpp_3m(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022, App. B): third-order multistep, one evaluation per step."""
    return dpmpp_multistep(denoise_fn, x, sigmas, order=3, sde=False, cond=cond, generator=generator,
                           callback=callback, lower_order_final=lower_order_final)


@register("dpmpp_2m_sde", order=1, noise=ALWAYS)
@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022): second-order multistep of the reverse SDE (strong order 1)."""
    return dpmpp_multistep(denoise_fn, x, sigmas, order=2, sde=True, cond=cond, generator=generator,
                           callback=callback, lower_order_final=True)


@register("dpmpp_2m_sde_heun", order=1, noise=ALWAYS)
@torch.no_grad()
def sample_dpmpp_2m_sde_heun(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """SDE-DPM-Solver++(2M) with the Heun coefficient (notation above): the web UI's "DPM++ 2M SDE Heun"."""
    return dpmpp_multistep(denoise_fn, x, sigmas, order=2, sde=True, cond=cond, generator=generator,
                           callback=callback, lower_order_final=True, heun=True)


@register("dpmpp_3m_sde", order=1, noise=ALWAYS)
@torch.no_grad()
def sample_dpmpp_3m_sde(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, lower_order_final: bool = True,
) -> Tensor:
    """SDE-DPM-Solver++(3M): third-order multistep of the reverse SDE (strong order 1), one evaluation per step."""
    return dpmpp_multistep(denoise_fn, x, sigmas, order=3, sde=True, cond=cond, generator=generator,
                           callback=callback, lower_order_final=lower_order_final)
