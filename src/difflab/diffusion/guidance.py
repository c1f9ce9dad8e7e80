"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around any denoiser.

Convention (the same as Stable Diffusion's `guidance_scale`):

    D_w(x, sigma, c) = D(x, sigma, null) + w * (D(x, sigma, c) - D(x, sigma, null))

so w = 0 is the unconditional model, w = 1 the conditional one and w > 1 guided. The combination is
written on x0_hat; since eps_hat = (x - x0_hat) / sigma is affine in x0_hat at fixed (x, sigma), it is
exactly the eps-space rule of Ho & Salimans and Stable Diffusion. Conditional and unconditional
predictions come from one batched forward pass ([x, x] with [c, null]).

Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
eq. 15-16, as in Stable Diffusion front ends): the guided eps is rescaled to the per-sample std of the
conditional eps and mixed with weight `rescale` (phi).

`null` is a function of the condition (the model's `condition.null`: the null class of labels, the NaN
vector, the empty prompt's context; see `difflab.conditions`) or a given unconditional condition, e.g. the
embedding of a negative prompt ([1, ...] is broadcast to the batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.diffusion.denoiser import DenoiseFn


def given_null(uncond: Tensor) -> Callable[[Tensor], Tensor]:
    """A `null` that returns a fixed unconditional condition (e.g. a negative prompt's embedding), batch-matched."""

    def null(cond: Tensor) -> Tensor:
        u = uncond.to(device=cond.device, dtype=cond.dtype)
        return u.expand(cond.shape[0], *u.shape[1:]) if u.shape[0] == 1 else u

    return null


def guided(
    denoise_fn: DenoiseFn,
    scale: float,
    rescale: float = 0.0,
    *,
    null: Callable[[Tensor], Tensor] | Tensor,
) -> DenoiseFn:
    """A denoiser applying classifier-free guidance with scale w = `scale` (see the module docstring)."""
    if scale < 0 or not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance_scale must be >= 0 and guidance_rescale in [0, 1]; got {scale}, {rescale}")
    if isinstance(null, Tensor):
        null = given_null(null)
    if scale == 1.0:
        return denoise_fn  # purely conditional: nothing to combine, no extra forward pass

    def guided_fn(x: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            return denoise_fn(x, sigma, None)
        if scale == 0.0:
            return denoise_fn(x, sigma, null(cond))
        both = denoise_fn(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, null(cond)]))
        d_cond, d_uncond = both.chunk(2)
        d = d_uncond + scale * (d_cond - d_uncond)
        if rescale > 0.0:
            d = _rescaled(x, sigma, d, d_cond, rescale)
        return d

    return guided_fn


def _rescaled(x: Tensor, sigma: Tensor, d: Tensor, d_cond: Tensor, phi: float) -> Tensor:
    """Rescale the guided eps to the conditional eps's per-sample std (Lin et al. eq. 15-16), back to x0."""
    s = sigma.to(x.dtype).clamp_min(1e-12).reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, ...)
    eps, eps_cond = (x - d) / s, (x - d_cond) / s
    dims = tuple(range(1, x.ndim))
    factor = eps_cond.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True).clamp_min(1e-12)
    eps = phi * (eps * factor) + (1.0 - phi) * eps
    return x - s * eps
