"""Multistep consistency sampling: the sampler of a consistency model (LCM).

Papers: Song et al. 2023 ("Consistency Models"), Algorithm 1; Luo et al. 2023 ("Latent Consistency Models"),
Algorithm 3 (the same loop in a latent space, with classifier-free guidance distilled in).

Notation (sigma view, x = x0 + sigma * eps):
    f(x, sigma)   the consistency function: maps any point of a probability-flow ODE trajectory to its end at
                  sigma = 0. A distilled difflab model's denoiser D is its consistency function (f(x, 0) = x is
                  D's own boundary condition, `difflab.diffusion.distillation`).
    s, s_next     current and next noise level (grid entries, float64)

Each step jumps to the trajectory's end, x0 = f(x, s), then noises it afresh to the next level,
x = x0 + s_next z (Song et al. Algorithm 1, line 5, with their eps -> 0; in VP variables this is LCM's
x_vp = sqrt(alpha_bar_next) x0 + sqrt(1 - alpha_bar_next) z). One network evaluation per step; one step is the
deterministic one-step generation f(x_T, sigma_max). Grids that start at the prior's level matter here: a
discrete VP model samples on the `trailing` grid (t = 999 first), which distilled checkpoints set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import (
    ALWAYS,
    DenoiseFn,
    Generator,
    StepCallback,
    randn_like,
    register,
    sigma_batch,
)


@register("lcm", order=1, noise=ALWAYS, consistency=True)
@torch.no_grad()
def sample_lcm(
    denoise_fn: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond: object = None,
    generator: Generator = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1; LCM Algorithm 3): x0 = f(x, s), then
    x = x0 + s_next z with fresh noise z, down the grid; the last step returns x0."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(s, x), cond)  # Algorithm 1, line 1 / 6: x <- f(x_hat, tau)
        x = x0 + s_next.float() * randn_like(x0, generator) if s_next > 0 else x0  # line 5: re-noise to tau_n
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": x0})
    return x
