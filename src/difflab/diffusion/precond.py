"""Preconditioning: the one place where a network becomes a denoiser.

Papers: Karras et al. 2022 (EDM), eq. (7) and Table 1; Salimans & Ho 2022 (v-prediction);
Liu et al. 2022 (rectified flow) and Esser et al. 2024 (SD3) for the flow row.

Notation:
    x        noisy input in the sigma view, x = x_0 + sigma * eps
    F        the raw network, F(c_in * x, c_noise, cond); it never sees sigma itself
    D        the denoiser, D(x; sigma) = c_skip * x + c_out * F(c_in * x, c_noise)     EDM eq. (7)

VP rows (alpha = 1 / sqrt(1 + sigma^2), the VP input is x_vp = alpha * x):
    prediction  c_skip              c_out                    F learns
    eps         1                   -sigma                   eps                      (DDPM)
    x0          0                   1                        x_0
    v           1 / (1 + sigma^2)   -sigma / sqrt(1+sigma^2)  v = alpha eps - sigma alpha x_0  (Salimans & Ho eq. 3)

EDM Table 1 rows that fix their own F target (sd = sigma_data):
    row  c_skip               c_out                        c_in                  c_noise      F learns
    VE   1                    sigma                        1                     ln(sigma/2)  -eps = sigma * score (NCSN)
    EDM  sd^2/(sigma^2+sd^2)  sigma sd/sqrt(sigma^2+sd^2)  1/sqrt(sigma^2+sd^2)  ln(sigma)/4  (x0 - c_skip x)/c_out (eq. 8)

Flow row (rectified flow x_t = (1 - t) x_0 + t eps, t = sigma / (1 + sigma), x_t = x / (1 + sigma); see flow.py):
    row   c_skip          c_out                 c_in            c_noise     F learns
    flow  1/(1 + sigma)   -sigma/(1 + sigma)    1/(1 + sigma)   M t         v = eps - x_0   (D = x_t - t v)

Training and sampling both call `Denoiser`, so the formula exists once.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from difflab.diffusion.conditioning import resolve, run_by_length
from difflab.utils.tensors import append_dims, as_batch

PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")


class Scalings(NamedTuple):
    """EDM eq. (7) coefficients at one noise level, each [B]."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def vp_scalings(sigma: Tensor, prediction: str) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) of a VP model with the given prediction target (table above)."""
    c_in = (1 + sigma**2).rsqrt()
    if prediction == "eps":
        return torch.ones_like(sigma), -sigma, c_in
    if prediction == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), c_in
    if prediction == "v":
        return 1 / (1 + sigma**2), -sigma * c_in, c_in
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def edm_scalings(sigma: Tensor, sigma_data: float) -> Scalings:
    """EDM Table 1, "Ours" column: unit-variance input and F target for data of std sigma_data."""
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data * (sigma**2 + sd2).rsqrt()
    c_in = (sigma**2 + sd2).rsqrt()
    return Scalings(c_skip, c_out, c_in, sigma.log() / 4)


def ve_scalings(sigma: Tensor) -> Scalings:
    """EDM Table 1, VE column (Song et al. 2021 NCSN++): D = x + sigma F, F ~ sigma * score."""
    ones = torch.ones_like(sigma)
    return Scalings(ones, sigma.clone(), ones, (sigma / 2).log())


def flow_scalings(sigma: Tensor, time_scale: float = 1000.0) -> Scalings:
    """The flow row above: the network sees x_t = x / (1 + sigma) and M t, and predicts the velocity eps - x_0."""
    c_in = 1 / (1 + sigma)  # = 1 - t
    t = sigma * c_in
    return Scalings(c_in, -t, c_in.clone(), time_scale * t)


class RawOutput(NamedTuple):
    """The network output F (float32) and the scalings that turn it into D."""

    F: Tensor
    scalings: Scalings


class Preconditioned(Protocol):
    """What `Denoiser` asks of a scheduler (`difflab.diffusion.schedules.Scheduler`): its scalings at sigma."""

    def scalings(self, sigma: Tensor) -> Scalings: ...


class Denoiser(nn.Module):
    """D(x, sigma, cond) -> x0_hat in float32, built from a network and a scheduler (EDM eq. 7)."""

    def __init__(self, net: nn.Module, scheduler: Preconditioned) -> None:
        super().__init__()
        self.net = net
        self.scheduler = scheduler

    def raw(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> RawOutput:
        """Run the network once: F(c_in x, c_noise, cond) as float32, with the scalings used. `cond` is resolved at
        sigma when it changes with the step, and rows with contexts of different lengths run as separate groups
        (`difflab.diffusion.conditioning`)."""
        sigma = as_batch(sigma, x)  # (B,)
        s = self.scheduler.scalings(sigma)
        c_in = append_dims(s.c_in, x.ndim).to(x.dtype)
        F = run_by_length(self.net, c_in * x, s.c_noise.float(), resolve(cond, sigma))  # (B, C, H, W), bf16 under autocast
        return RawOutput(F.float(), s)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> Tensor:
        """x0_hat = c_skip * x + c_out * F, in float32 ([B, C, H, W])."""
        F, s = self.raw(x, sigma, cond)
        c_skip = append_dims(s.c_skip, x.ndim).float()
        c_out = append_dims(s.c_out, x.ndim).float()
        return c_skip * x.float() + c_out * F
