"""Continuous noise-level schedulers: EDM and the variance-exploding (VE) SDE.

Papers: Karras et al. 2022 (EDM), eq. (5), eq. (7)-(8) and Table 1;
Song et al. 2021 (score SDE, "Score-Based Generative Modeling through SDEs"), VE SDE eq. (9), App. C.

Notation (code name -> paper symbol), always in the sigma view x = x0 + sigma * eps:
    sigma_data      sigma_data, std of the data (EDM Sec. 5; 0.5 for images in [-1, 1])
    p_mean, p_std   P_mean, P_std: ln(sigma) ~ N(P_mean, P_std^2) at training       EDM Table 1, "Ours"
    rho             rho, the Karras grid exponent                                      EDM eq. (5)
    t               VE SDE time in (0, 1]; sigma(t) = sigma_min (sigma_max / sigma_min)^t   Song et al. App. C
    eps_t           smallest training time, t ~ U(eps_t, 1) (score_sde code: 1e-5)
    c_*             EDM eq. (7) preconditioning, one Table 1 row each (see precond.py)

Neither scheduler has a table of training timesteps: a sampler needs an explicit `steps`, and the
DDPM/DDIM timestep spacings (leading/trailing/linspace) do not apply. Both start sampling from
x_T = sigma_max * z (EDM Algorithm 1, Song et al. Algorithm 2), the base class's `prior_std`.
`prediction` names what F learns under the fixed Table 1 row; it is a label, not a choice.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from difflab.diffusion.precond import Scalings, edm_scalings, ve_scalings
from difflab.diffusion.schedules import COMMON_GRIDS, Scheduler, logsnr_sigmas

geometric_sigmas = logsnr_sigmas  # Song et al. 2021's VE grid is the log-SNR-uniform grid


def _float_dtype(device: torch.device) -> torch.dtype:
    """float64 for noise levels wherever the device supports it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


class ContinuousScheduler(Scheduler):
    """A scheduler over a continuous sigma range [sigma_min, sigma_max] with a fixed preconditioning row."""

    grids: tuple[str, ...] = COMMON_GRIDS

    def __init__(self, sigma_min: float, sigma_max: float, rho: float = 7.0, grid: str = "karras") -> None:
        # Scheduler.__init__ is skipped on purpose: its prediction/grid options are those of discrete VP.
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        if grid not in self.grids:
            raise ValueError(
                f"unknown sigma grid {grid!r} for {type(self).__name__}; choose one of {self.grids} "
                "(timestep spacings need a discrete schedule)"
            )
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.rho = float(rho)
        self.grid = grid


class SDEScheduler(ContinuousScheduler):
    """A scheduler given by an SDE time t in (0, 1]: training draws t ~ U(eps_t, 1) and uses sigma(t)."""

    eps_t: float = 1e-5

    @abstractmethod
    def sigma_of_t(self, t: Tensor) -> Tensor:
        """sigma at SDE time t."""

    def sample_training_sigma(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """Song et al. (score_sde code): t ~ U(eps_t, 1), sigma = sigma(t) ([n], float64 where supported)."""
        device = torch.device(device)
        u = torch.rand(n, generator=generator, device=device, dtype=_float_dtype(device))
        return self.sigma_of_t(self.eps_t + (1 - self.eps_t) * u)


class EDMScheduler(ContinuousScheduler):
    """EDM (Karras et al. 2022, Table 1 "Ours"): log-normal training sigmas, sigma_data preconditioning."""

    kind = "edm"
    prediction = "edm"  # F learns (x0 - c_skip x) / c_out, EDM eq. (8)

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        rho: float = 7.0,
        grid: str = "karras",
    ) -> None:
        super().__init__(sigma_min, sigma_max, rho=rho, grid=grid)
        if sigma_data <= 0 or p_std <= 0:
            raise ValueError(f"sigma_data and p_std must be > 0, got {sigma_data} and {p_std}")
        self.sigma_data = float(sigma_data)
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)

    def scalings(self, sigma: Tensor) -> Scalings:
        """EDM Table 1 preconditioning; c_noise = ln(sigma) / 4."""
        return edm_scalings(sigma, self.sigma_data)

    def sample_training_sigma(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """EDM Table 1: ln(sigma) ~ N(P_mean, P_std^2), not clipped to the grid ([n], float64 where supported)."""
        device = torch.device(device)
        z = torch.randn(n, generator=generator, device=device, dtype=_float_dtype(device))
        return (self.p_mean + self.p_std * z).exp()

    def __repr__(self) -> str:
        return (
            f"EDMScheduler(sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g}, "
            f"sigma_data={self.sigma_data}, p_mean={self.p_mean}, p_std={self.p_std}, rho={self.rho}, grid={self.grid!r})"
        )


class VEScheduler(SDEScheduler):
    """VE SDE (Song et al. 2021, eq. 9) with the geometric sigma(t) of NCSN/SMLD and EDM's VE preconditioning."""

    kind = "ve"
    prediction = "score"  # F learns -eps = sigma * score (NCSN), EDM Table 1 VE column
    grids = ("geometric", *COMMON_GRIDS)

    def __init__(
        self,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        eps_t: float = 1e-5,
        rho: float = 7.0,
        grid: str = "geometric",
        scale_input: bool = False,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__(sigma_min, sigma_max, rho=rho, grid=grid)
        if not 0 <= eps_t < 1:
            raise ValueError(f"eps_t must be in [0, 1), got {eps_t}")
        self.eps_t = float(eps_t)
        self.scale_input, self.sigma_data = bool(scale_input), float(sigma_data)

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """Song et al. App. C: sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def scalings(self, sigma: Tensor) -> Scalings:
        """EDM Table 1 VE column: c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2).

        With `scale_input`, c_in = 1 / sqrt(sigma^2 + sigma_data^2) (EDM's input scaling) instead, so the
        network sees unit-variance inputs at every noise level rather than inputs of std up to sigma_max.
        """
        s = ve_scalings(sigma)
        if not self.scale_input:
            return s
        return s._replace(c_in=(sigma**2 + self.sigma_data**2).rsqrt())

    def inference_sigmas(self, steps: int) -> Tensor:
        """Geometric grid sigma_max -> sigma_min (Song et al. reverse diffusion) or Karras, then 0 ([steps + 1])."""
        if self.grid in COMMON_GRIDS:
            return super().inference_sigmas(steps)
        return logsnr_sigmas(steps, self.sigma_min, self.sigma_max)

    def __repr__(self) -> str:
        return (
            f"VEScheduler(sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g}, "
            f"eps_t={self.eps_t:g}, rho={self.rho}, grid={self.grid!r}"
            + (f", scale_input=True, sigma_data={self.sigma_data:g})" if self.scale_input else ")")
        )
