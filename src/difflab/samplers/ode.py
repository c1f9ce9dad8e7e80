"""The probability-flow ODE: fixed-step Heun or adaptive RK45, and exact encoding/decoding.

Papers: Song et al. 2021 (score SDE), eq. (13) and Sec. 4.3 (RK45 via scipy, NFE reported);
Karras et al. 2022 (EDM), eq. (3) and Algorithm 1.

Notation (sigma view):
    dx/dsigma   = (x - D(x, sigma)) / sigma                                      EDM eq. (3)
    s = log sigma:  dx/ds = x - D(x, sigma)       (integrated in log sigma: smooth over 4+ decades)
The adaptive solver integrates from sigmas[0] to the smallest non-zero grid entry; a trailing 0 in the
grid adds the final denoising step x = D(x, sigma_min). Its error control spans the whole batch, so
with `method="rk45"` an image can depend on its batch-mates within `rtol`/`atol`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from difflab.diffusion.denoiser import integrate_log_sigma
from difflab.samplers.base import DenoiseFn, Generator, StepCallback, register, sigma_batch
from difflab.samplers.euler import sample_heun

METHODS = ("heun", "rk45")


@torch.no_grad()
def probability_flow(denoise_fn: DenoiseFn, x: Tensor, sigma_from: float, sigma_to: float, *, cond: object = None,
                     rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """Integrate the probability-flow ODE from sigma_from to sigma_to (> 0) with RK45, in log sigma."""
    shape, device, dtype = x.shape, x.device, x.dtype

    def f(s: float, y: np.ndarray) -> np.ndarray:  # dx/d(log sigma) = x - D(x, sigma)
        xt = torch.from_numpy(y).reshape(shape).to(device, dtype)
        sigma = torch.tensor(float(np.exp(s)), dtype=torch.float64)
        return (xt - denoise_fn(xt, sigma_batch(sigma, xt), cond)).double().cpu().numpy().ravel()

    y = integrate_log_sigma(f, x.double().cpu().numpy().ravel(), sigma_from, sigma_to, rtol, atol)
    return torch.from_numpy(y).reshape(shape).to(device, dtype)


@register("ode", order=5)  # RK45 (Dormand-Prince 5(4)); method="heun" is order 2
@torch.no_grad()
def sample_ode(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, method: str = "rk45", rtol: float = 1e-5, atol: float = 1e-5,
) -> Tensor:
    """Probability-flow ODE sampler: `heun` on the grid (EDM Alg. 1) or adaptive `rk45` (Song et al. Sec. 4.3)."""
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {METHODS}")
    if method == "heun":
        return sample_heun(denoise_fn, x, sigmas, cond=cond, callback=callback)
    positive = sigmas[sigmas > 0]
    x = probability_flow(denoise_fn, x, float(positive[0]), float(positive[-1]), cond=cond, rtol=rtol, atol=atol)
    if sigmas[-1] == 0:  # final denoising step
        x0 = denoise_fn(x, sigma_batch(positive[-1], x), cond)
        if callback is not None:
            callback({"i": 0, "x": x0, "sigma": positive[-1], "sigma_next": sigmas[-1], "denoised": x0})
        x = x0
    return x
