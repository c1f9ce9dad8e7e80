"""The VP and sub-VP SDEs of score-based modelling, with linear beta(t), in the sigma view.

Paper: Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
eqs. (11) (VP) and (12) (sub-VP), App. B-C; EDM (Karras et al. 2022) Table 1, VP column (c_noise).

Notation:
    beta(t)         beta_min + t (beta_max - beta_min), t in [0, 1]           (0.1 and 20 in the paper)
    abar(t)         exp(-(t^2 / 2)(beta_max - beta_min) - t beta_min), the squared mean coefficient
    VP              x_t = sqrt(abar) x0 + sqrt(1 - abar) eps    -> sigma = sqrt(1 / abar - 1)
    sub-VP          x_t = sqrt(abar) x0 + (1 - abar) eps         -> sigma = (1 - abar) / sqrt(abar)
    L(sigma)        -log abar: log(1 + sigma^2) (VP); -2 log u, u = (sqrt(sigma^2 + 4) - sigma) / 2 (sub-VP)
    t(sigma)        (sqrt(beta_min^2 + 2 (beta_max - beta_min) L) - beta_min) / (beta_max - beta_min)
    c_noise         (M - 1) t with M = 1000, so DDPM-sized time embeddings fit (EDM Table 1)
    c_in            sqrt(abar): the network sees x_t, as in the paper
Both start from N(0, I) in x_t, i.e. prior std sqrt(1 + sigma^2) in the sigma view (also for sub-VP:
its marginal variance at unit data variance is abar (1 + sigma^2)). Training: t ~ U(eps_t, 1).
Sampling grids: "uniform" in t from 1 to t_min (Song et al.'s samplers, t_min = 1e-3), or "karras".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.diffusion.continuous import SDEScheduler
from difflab.diffusion.schedules import COMMON_GRIDS
from difflab.diffusion.precond import PREDICTIONS, Scalings, vp_scalings


class LinearBetaSDE(SDEScheduler):
    """Shared time <-> sigma maps of the VP and sub-VP SDEs."""

    grids = ("uniform", *COMMON_GRIDS)
    M = 1000  # c_noise = (M - 1) t

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-5, t_min: float = 1e-3,
                 rho: float = 7.0, grid: str = "uniform") -> None:
        if not 0 <= beta_min < beta_max or not 0 <= eps_t < 1 or not 0 < t_min < 1:
            raise ValueError(f"need 0 <= beta_min < beta_max, 0 <= eps_t < 1, 0 < t_min < 1; "
                             f"got {beta_min}, {beta_max}, {eps_t}, {t_min}")
        self.beta_min, self.beta_max, self.eps_t, self.t_min = float(beta_min), float(beta_max), float(eps_t), float(t_min)
        t = torch.tensor([t_min, 1.0], dtype=torch.float64)
        lo, hi = self.sigma_of_t(t).tolist()
        super().__init__(lo, hi, rho=rho, grid=grid)

    def neg_log_abar(self, t: Tensor) -> Tensor:
        """-log abar(t) = t^2 (beta_max - beta_min) / 2 + t beta_min."""
        return 0.5 * t**2 * (self.beta_max - self.beta_min) + t * self.beta_min

    def t_of_neg_log_abar(self, L: Tensor) -> Tensor:
        """Inverse of `neg_log_abar` (the positive root)."""
        d = self.beta_max - self.beta_min
        return ((self.beta_min**2 + 2 * d * L).sqrt() - self.beta_min) / d

    def prior_std(self, sigma: float) -> float:
        """x_T ~ N(0, I) in x_t, i.e. N(0, (1 + sigma^2) I) in the sigma view."""
        return math.sqrt(1.0 + float(sigma) ** 2)

    def __repr__(self) -> str:
        extra = f", prediction={self.prediction!r}" if hasattr(self, "prediction") else ""
        return (f"{type(self).__name__}(beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, eps_t={self.eps_t:g}, "
                f"t_min={self.t_min:g}, grid={self.grid!r}{extra})")

    def inference_sigmas(self, steps: int) -> Tensor:
        """Uniform in t from 1 to t_min (Song et al.) or Karras, then 0 ([steps + 1], float64)."""
        if self.grid in COMMON_GRIDS:
            return super().inference_sigmas(steps)
        t = torch.linspace(1.0, self.t_min, steps, dtype=torch.float64)
        return torch.cat([self.sigma_of_t(t), t.new_zeros(1)])


class VPSDEScheduler(LinearBetaSDE):
    """VP SDE (Song et al. 2021, eq. 11; DDPM in continuous time), eps/x0/v prediction."""

    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-5, t_min: float = 1e-3,
                 prediction: str = "eps", rho: float = 7.0, grid: str = "uniform") -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        self.prediction = prediction
        super().__init__(beta_min, beta_max, eps_t, t_min, rho, grid)

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """sigma(t) = sqrt(1 / abar(t) - 1)."""
        return torch.expm1(self.neg_log_abar(t)).sqrt()

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """t(sigma) with -log abar = log(1 + sigma^2) (EDM Table 1, VP)."""
        return self.t_of_neg_log_abar(torch.log1p(sigma**2))

    def scalings(self, sigma: Tensor) -> Scalings:
        """VP rows of precond.py; c_noise = 999 t(sigma)."""
        c_skip, c_out, c_in = vp_scalings(sigma, self.prediction)
        return Scalings(c_skip, c_out, c_in, (self.M - 1) * self.t_of_sigma(sigma))


class SubVPSDEScheduler(LinearBetaSDE):
    """sub-VP SDE (Song et al. 2021, eq. 12): VP's mean with variance (1 - abar)^2; eps prediction."""

    kind = "subvp"
    prediction = "eps"

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """sigma(t) = (1 - abar) / sqrt(abar)."""
        L = self.neg_log_abar(t)
        return -torch.expm1(-L) * (0.5 * L).exp()

    def sqrt_abar(self, sigma: Tensor) -> Tensor:
        """u = sqrt(abar) solving sigma u = 1 - u^2."""
        return 2 / ((sigma**2 + 4).sqrt() + sigma)  # = (sqrt(sigma^2 + 4) - sigma) / 2, without cancellation

    def scalings(self, sigma: Tensor) -> Scalings:
        """D = x - sigma F(sqrt(abar) x, 999 t): the network sees x_t and predicts eps."""
        u = self.sqrt_abar(sigma)
        t = self.t_of_neg_log_abar(-2 * u.log())
        return Scalings(torch.ones_like(sigma), -sigma, u, (self.M - 1) * t)
