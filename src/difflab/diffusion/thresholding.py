"""Keeping the denoised estimate x0_hat inside the data range while sampling.

Notation (sigma view, x = x0 + sigma * eps):

    x0_hat = D(x, sigma)     the denoiser's estimate of the clean image, data range [-1, 1]
    s                        per-image threshold (dynamic thresholding)
    p                        percentile of |x0_hat| that sets s (Imagen: 0.995)

Every sampler derives its step from x0_hat (eps_hat = (x - x0_hat) / sigma), so changing x0_hat here
changes eps_hat consistently: clipping x0 and re-deriving eps, as DDPM's and DDIM's reference code do.

- static clipping (Ho et al. 2020, reference code `clip_denoised=True`): x0_hat <- clamp(x0_hat, -1, 1).
- dynamic thresholding (Saharia et al. 2022, "Imagen", Sec. 2.3): s = max(1, quantile_p |x0_hat|) per image,
  x0_hat <- clamp(x0_hat, -s, s) / s: saturated pixels are pushed inwards instead of being clipped flat.
"""

from __future__ import annotations

import torch
from torch import Tensor

MODES = (False, True, "dynamic")  # no clipping, static clipping, dynamic thresholding


def static_clip(x0: Tensor) -> Tensor:
    """x0_hat clamped to the data range [-1, 1] (DDPM reference code)."""
    return x0.clamp(-1, 1)


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Imagen Sec. 2.3: s = max(1, quantile_p |x0_hat|) per image; clamp to [-s, s], divide by s ([B, ...])."""
    flat = x0.abs().reshape(x0.shape[0], -1).float()  # (B, C*H*W)
    s = torch.quantile(flat, percentile, dim=1).clamp_min(1.0)  # (B,)
    s = s.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return torch.maximum(torch.minimum(x0, s), -s) / s


def threshold(x0: Tensor, mode: bool | str, percentile: float = 0.995) -> Tensor:
    """x0_hat under `mode` (False: unchanged, True: static clipping, "dynamic": dynamic thresholding)."""
    if mode is False:
        return x0
    if mode is True:
        return static_clip(x0)
    if mode == "dynamic":
        return dynamic_threshold(x0, percentile)
    raise ValueError(f"unknown x0 clipping mode {mode!r}; choose one of {MODES}")
