"""Adaptive DPM-Solver: step size in lambda chosen by an embedded DPM-Solver++ 1 / 2S pair and tolerances.

Paper: Lu et al. 2022, "DPM-Solver", Algorithm 4 (adaptive step size, DPM-Solver-12), here in data prediction
(Lu et al. 2022, "DPM-Solver++", Algorithm 1 for the 2S step).

Notation (sigma view, lambda = -log sigma):
    s, t = s + h          current and proposed lambda;  u = s + h / 2 (r = 1/2)
    D_s, D_u              D(x_s, sigma_s), D(x_u, sigma_u)
    x_low                 (sigma_t/sigma_s) x - (e^{-h} - 1) D_s                                (DPM-Solver++ 1)
    x_u                   (sigma_u/sigma_s) x - (e^{-h/2} - 1) D_s
    x_high                (sigma_t/sigma_s) x - (e^{-h} - 1) D_u                     (DPM-Solver++ 2S, r = 1/2)
    E                     RMS of (x_high - x_low) / max(atol, rtol max(|x_low|, |x|)) per sample  Alg. 4, line 6
    accept when max_i E_i <= 1;  h <- min(theta h E^{-1/2}, lambda_end - s), theta = 0.9         Alg. 4, lines 7-9
The solve runs from the grid's first level to its smallest positive one; a trailing 0 adds x = D(x, sigma_min).
Step control takes the largest error in the batch, so an image can depend on its batch-mates within the
tolerances (as RK45 in `ode.py`). The network evaluations it spent are counted by `generate` (NFE).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import DenoiseFn, Generator, StepCallback, register, sigma_batch


def _error(x_high: Tensor, x_low: Tensor, x: Tensor, rtol: float, atol: float) -> float:
    """Largest per-sample RMS of the scaled difference (Algorithm 4, line 6)."""
    scale = torch.maximum(x_low.abs(), x.abs()).mul(rtol).clamp(min=atol)
    return float(((x_high - x_low) / scale).pow(2).flatten(1).mean(1).sqrt().max())


@register("dpm_adaptive", order=2)
@torch.no_grad()
def sample_dpm_adaptive(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
) -> Tensor:
    """DPM-Solver-12 with adaptive steps (Lu et al. 2022, Algorithm 4) in data prediction; NFE follows rtol/atol."""
    if rtol <= 0 or atol <= 0 or h_init <= 0:
        raise ValueError(f"dpm_adaptive needs rtol, atol, h_init > 0, got {rtol}, {atol}, {h_init}")
    positive = sigmas[sigmas > 0]
    lam, lam_end = -positive[0].log(), -positive[-1].log()
    h, i = torch.tensor(h_init, dtype=torch.float64), 0
    while lam_end - lam > 1e-6:
        h = torch.minimum(h, lam_end - lam)
        sigma, sigma_t, sigma_u = (-lam).exp(), (-(lam + h)).exp(), (-(lam + h / 2)).exp()
        d_s = denoise_fn(x, sigma_batch(sigma, x), cond)
        x_low = (sigma_t / sigma).float() * x - torch.expm1(-h).float() * d_s
        x_u = (sigma_u / sigma).float() * x - torch.expm1(-h / 2).float() * d_s
        x_high = (sigma_t / sigma).float() * x - torch.expm1(-h).float() * denoise_fn(x_u, sigma_batch(sigma_u, x), cond)
        err = _error(x_high, x_low, x, rtol, atol)
        if err <= 1.0:  # accept
            x, lam = x_high, lam + h
            if callback is not None:
                callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_t, "denoised": d_s})
            i += 1
        h = h * min(10.0, 0.9 * max(err, 1e-10) ** -0.5)
    if sigmas[-1] == 0:  # final denoising step
        x = denoise_fn(x, sigma_batch(positive[-1], x), cond)
    return x
