"""Denoising losses, returning one value per example.

Papers: Ho et al. 2020 (DDPM, L_simple eq. 14), Karras et al. 2022 (EDM eq. 2 and 8),
Salimans & Ho 2022 (v-prediction), Hang et al. 2023 (Min-SNR-gamma weighting).

Notation:
    x0, eps, sigma   data, standard normal noise, noise level; x = x0 + sigma * eps
    F                raw network output; D = c_skip x + c_out F (see precond.py)
    F_target         (x0 - c_skip x) / c_out: the value of F for which D = x0 (EDM eq. 8)
    snr              1 / sigma^2 (= alpha_bar / (1 - alpha_bar) for VP)

The loss is E ||F - F_target||^2 with a per-sigma weight w(sigma) in F space. `weighting`:
    simple   w = 1: DDPM's L_simple for eps-prediction, plain x0 / v regression otherwise,
             and EDM's lambda(sigma) = 1 / c_out^2 for EDM preconditioning.
    min_snr  w = min(snr, gamma) * c_out^2, i.e. D-space weight min(snr, gamma) (Hang et al. eq. 6):
             min(snr, gamma) / snr for eps, min(snr, gamma) for x0, min(snr, gamma) / (snr + 1) for v.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.diffusion.precond import Denoiser
from difflab.utils.tensors import append_dims

WEIGHTINGS: tuple[str, ...] = ("simple", "min_snr")


class DiffusionLoss:
    """loss_fn(D, x0, cond, generator=None) -> [B] per-example weighted denoising loss."""

    def __init__(self, weighting: str = "simple", min_snr_gamma: float = 5.0) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {WEIGHTINGS}")
        self.weighting = weighting
        self.min_snr_gamma = min_snr_gamma

    def weight(self, sigma: Tensor, c_out: Tensor) -> Tensor:
        """w(sigma) in F space ([B])."""
        if self.weighting == "simple":
            return torch.ones_like(sigma)
        snr = sigma.pow(-2)
        return snr.clamp(max=self.min_snr_gamma) * c_out**2

    @staticmethod
    def draw_noise(
        denoiser: Denoiser, x0: Tensor, n: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(sigma [n], eps [n, *x0.shape[1:]]) for n examples shaped like x0's (n = len(x0) by default)."""
        n = x0.shape[0] if n is None else n
        sigma = denoiser.scheduler.sample_training_sigma(n, generator=generator, device=x0.device)
        eps = torch.randn((n, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype)
        return sigma, eps

    def __call__(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Noise x0 at training noise levels and return the weighted F-space MSE per example ([B]).

        `noise` = (sigma [B], eps [B, ...]) drawn by the caller (e.g. its rank's share of a global batch's)."""
        sigma, eps = self.draw_noise(denoiser, x0, generator=generator) if noise is None else noise
        sigma_x = append_dims(sigma, x0.ndim).to(x0.dtype)  # float64 sigma stays exact for c_noise only
        x = x0 + sigma_x * eps  # (B, C, H, W)
        F, s = denoiser.raw(x, sigma, cond)
        c_skip = append_dims(s.c_skip, x0.ndim).to(x0.dtype)
        c_out = append_dims(s.c_out, x0.ndim).to(x0.dtype)
        # F_target = (x0 - c_skip (x0 + sigma eps)) / c_out, written without the cancellation in x0 - c_skip x
        target = (((1 - c_skip) * x0 - c_skip * sigma_x * eps) / c_out).float()
        w = self.weight(sigma, s.c_out).float()
        return w * (F - target).pow(2).flatten(1).mean(dim=1)

    def __repr__(self) -> str:
        return f"DiffusionLoss(weighting={self.weighting!r}, min_snr_gamma={self.min_snr_gamma})"
