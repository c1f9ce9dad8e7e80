"""DPM-Solver++(2M): second-order multistep solver of the probability-flow ODE in data prediction.

Paper: Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
Algorithm 2 (multistep second order, data prediction).

Notation (sigma view, x = x0 + sigma * eps; for VP models lambda = log(alpha / sigma_vp) = -log sigma):
    lam, h       lambda_i = -log sigma_i, h_i = lambda_{i+1} - lambda_i
    r            h_{i-1} / h_i
    D_i          D(x_i, sigma_i), the data prediction
    update       x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_hat          Algorithm 2, line 7
    D_hat        (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}  (first step: D_0)                   Algorithm 2, line 6
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import DenoiseFn, Generator, StepCallback, register, sigma_batch


@register("dpmpp_2m")
@torch.no_grad()
def sample_dpmpp_2m(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2); first-order first step, x = D at sigma = 0."""
    x0_prev: Tensor | None = None
    h_prev: Tensor | None = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(sigma, x), cond)
        if sigma_next == 0:  # h = infinity: the update collapses to the data prediction
            x = x0
        else:
            h = sigma.log() - sigma_next.log()  # lambda_{i+1} - lambda_i
            if x0_prev is None or h_prev is None:
                x0_hat = x0  # DPM-Solver++(1), i.e. DDIM
            else:
                r = h_prev / h
                x0_hat = (1 + 1 / (2 * r)).float() * x0 - (1 / (2 * r)).float() * x0_prev
            x = (sigma_next / sigma).float() * x - torch.expm1(-h).float() * x0_hat
            h_prev = h
        x0_prev = x0
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0})
    return x
