"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around any denoiser.

Convention (the same as Stable Diffusion's `guidance_scale`):

    D_w(x, sigma, c) = D(x, sigma, null) + w * (D(x, sigma, c) - D(x, sigma, null))

so w = 0 is the unconditional model, w = 1 the conditional one and w > 1 guided. The combination is
written on x0_hat; since eps_hat = (x - x0_hat) / sigma is affine in x0_hat at fixed (x, sigma), it is
exactly the eps-space rule of Ho & Salimans and Stable Diffusion. Conditional and unconditional
predictions come from one batched forward pass ([x, x] with [c, null]), split by context length when a long
prompt meets a short one (`conditioning.run_by_length`).

Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
eq. 15-16, as in Stable Diffusion front ends): the guided eps is rescaled to the per-sample std of the
conditional eps and mixed with weight `rescale` (phi).

`null` is a function of the condition (the model's `condition.null`: the null class of labels, the NaN
vector, the empty prompt's context; see `difflab.conditions`) or a given unconditional condition, e.g. the
embedding of a negative prompt ([1, ...] is broadcast to the batch). Either may change with the sampler step
(`[from:to:when]` in a prompt): both are resolved at the noise level of each call (`difflab.diffusion.conditioning`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.conditioning import cat_conds, on_grid, repeat_rows, resolve
from difflab.diffusion.denoiser import DenoiseFn


def given_null(uncond: Any) -> Callable[[Any], Any]:
    """A `null` that returns a fixed unconditional condition (e.g. a negative prompt's embedding), batch-matched."""

    def null(cond: Any) -> Any:
        if isinstance(uncond, Tensor) and isinstance(cond, Tensor):
            u = uncond.to(device=cond.device, dtype=cond.dtype)
        else:
            u = uncond.to(device=cond.device)
        return repeat_rows(u, len(cond))

    return null


class Guided:
    """A denoiser applying classifier-free guidance with scale w = `scale` (see the module docstring).

    `cond` may change with the step (prompt editing: `difflab.diffusion.conditioning`), and so may a given
    unconditional condition: `on_grid` binds it to the sampler's grid, and both are resolved at the noise level
    each call is made at."""

    def __init__(self, denoise_fn: DenoiseFn, scale: float, rescale: float, null: Callable[[Any], Any] | Any) -> None:
        self.denoise_fn, self.scale, self.rescale, self.null = denoise_fn, float(scale), float(rescale), null

    def on_grid(self, sigmas: Tensor) -> Guided:
        """This guidance with a step-dependent unconditional condition bound to the grid `sigmas`."""
        return self if callable(self.null) else Guided(self.denoise_fn, self.scale, self.rescale,
                                                       on_grid(self.null, sigmas))

    def _null(self, cond: Any, sigma: Tensor) -> Any:
        if callable(self.null):
            return self.null(cond)
        return given_null(resolve(self.null, sigma[:1]))(cond)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        if cond is None:
            return self.denoise_fn(x, sigma, None)
        cond = resolve(cond, sigma)
        if self.scale == 0.0:
            return self.denoise_fn(x, sigma, self._null(cond, sigma))
        both = self.denoise_fn(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_conds([cond, self._null(cond, sigma)]))
        d_cond, d_uncond = both.chunk(2)
        d = d_uncond + self.scale * (d_cond - d_uncond)
        if self.rescale > 0.0:
            d = _rescaled(x, sigma, d, d_cond, self.rescale)
        return d


def guided(
    denoise_fn: DenoiseFn,
    scale: float,
    rescale: float = 0.0,
    *,
    null: Callable[[Any], Any] | Any,
) -> DenoiseFn:
    """A denoiser applying classifier-free guidance with scale w = `scale` (see the module docstring); `null` is a
    function of the condition or a given unconditional condition (a Tensor, `TextCond` or prompt schedule)."""
    if scale < 0 or not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance_scale must be >= 0 and guidance_rescale in [0, 1]; got {scale}, {rescale}")
    if scale == 1.0:
        return denoise_fn  # purely conditional: nothing to combine, no extra forward pass
    return Guided(denoise_fn, scale, rescale, null)


def _rescaled(x: Tensor, sigma: Tensor, d: Tensor, d_cond: Tensor, phi: float) -> Tensor:
    """Rescale the guided eps to the conditional eps's per-sample std (Lin et al. eq. 15-16), back to x0."""
    s = sigma.to(x.dtype).clamp_min(1e-12).reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, ...)
    eps, eps_cond = (x - d) / s, (x - d_cond) / s
    dims = tuple(range(1, x.ndim))
    factor = eps_cond.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True).clamp_min(1e-12)
    eps = phi * (eps * factor) + (1.0 - phi) * eps
    return x - s * eps
