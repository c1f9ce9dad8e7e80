"""Flow matching / rectified flow: the straight-line schedule with a velocity target, in the sigma view.

Papers: Liu et al. 2022 ("Flow Straight and Fast", rectified flow), eq. (1); Lipman et al. 2023 ("Flow Matching
for Generative Modeling"), the conditional flow matching loss with the optimal-transport path (Sec. 4.1, with
sigma_min -> 0); Esser et al. 2024 ("Scaling Rectified Flow Transformers", SD3): Sec. 3.1 (logit-normal t) and
Sec. 5.3.2 (resolution-dependent timestep shift).

Notation (code name -> paper symbol; t = 0 is data, t = 1 is noise, as in Liu et al. and SD3):
    t            interpolation time in (0, 1)
    x_t          (1 - t) x_0 + t eps                                   (1)  Liu et al. eq. (1), SD3 Sec. 2 "RF"
    v            dx_t/dt = eps - x_0, the velocity (CFM target)        (2)
    sigma        t / (1 - t);  t = sigma / (1 + sigma)                 (3)
    x            x_t / (1 - t) = x_0 + sigma eps: the sigma view of difflab (EDM eq. 1)
    F            the network, trained on ||F(x_t, M t) - v||^2: the CFM loss = difflab's `weighting=simple`
    D            x_t - t F = x / (1 + sigma) - sigma / (1 + sigma) F    (4)  (c_skip, c_out, c_in in precond.py)
    M            `time_scale`: c_noise = M t (1000, diffusers' / SD3's timestep = 1000 t)
    m, s         `logit_mean`, `logit_std`: logit(t) ~ N(m, s^2) at training   (5)  SD3 Sec. 3.1, pi_ln(t; m, s)
    alpha        `shift`: t -> alpha t / (1 + (alpha - 1) t) on the sampling grid  (6)  SD3 Sec. 5.3.2
    t_min, t_max the sampling range; t_max < 1 because sigma(1) is infinite, so sampling starts at sigma(t_max)

Sampling. Euler in t on the velocity, x_t' = x_t + (t' - t) v (the flow sampler of Liu et al., SD3 and diffusers'
FlowMatchEulerDiscreteScheduler), is difflab's Euler step on the mapped grid sigma(t): with v = (x_t - D) / t both
give x_t' = (t' / t) x_t + (1 - t' / t) D. Every other sampler runs on the same sigma grid. The prior at sigma_max
is N(0, (1 + sigma_max^2) I) in the sigma view, i.e. x_t ~ N(0, ((1 - t)^2 + t^2) I): the marginal of unit-variance
data, which is N(0, I) as t_max -> 1 (the flow's prior), like the VP schedulers' prior.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.diffusion.continuous import SDEScheduler, _float_dtype
from difflab.diffusion.precond import Scalings, flow_scalings
from difflab.diffusion.schedules import COMMON_GRIDS
from difflab.errors import ConfigError

T_DISTRIBUTIONS: tuple[str, ...] = ("uniform", "logit_normal")


def _check(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError.bad_value(f"scheduler.{key}", problem, fix)


class FlowScheduler(SDEScheduler):
    """Rectified flow x_t = (1 - t) x_0 + t eps with a velocity-predicting network (notation above)."""

    kind = "flow"
    prediction = "v_flow"  # F learns v = eps - x_0 (a label: the row is fixed, see precond.py)
    grids = ("uniform", *COMMON_GRIDS)

    def __init__(
        self,
        t_distribution: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        eps_t: float = 1e-5,
        t_min: float = 1e-3,
        t_max: float = 0.999,
        shift: float = 1.0,
        time_scale: float = 1000.0,
        rho: float = 7.0,
        grid: str = "uniform",
    ) -> None:
        _check(t_distribution in T_DISTRIBUTIONS, "t_distribution", f"unknown training distribution of t "
               f"{t_distribution!r}", f"Choose one of {', '.join(T_DISTRIBUTIONS)}.")
        _check(math.isfinite(logit_std) and logit_std > 0, "logit_std",
               f"{logit_std} must be > 0 (the std of logit(t))", "Pass scheduler.logit_std=1.0 (SD3's choice).")
        _check(math.isfinite(logit_mean), "logit_mean", f"{logit_mean} is not finite", "Pass scheduler.logit_mean=0.0.")
        _check(0 < eps_t < 1, "eps_t", f"{eps_t} must be in (0, 1): t = 0 has no noise to learn a velocity from",
               "Pass scheduler.eps_t=1e-5.")
        _check(0 < t_min < t_max < 1, "t_min", f"need 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max} "
               "(sigma = t / (1 - t) is infinite at t = 1)", "Pass e.g. scheduler.t_min=1e-3 scheduler.t_max=0.999.")
        _check(math.isfinite(shift) and shift > 0, "shift", f"{shift} must be > 0",
               "Pass scheduler.shift=1.0 (no shift) or SD3's 3.0.")
        _check(time_scale > 0, "time_scale", f"{time_scale} must be > 0", "Pass scheduler.time_scale=1000.")
        _check(grid in self.grids, "grid", f"unknown sigma grid {grid!r} for FlowScheduler",
               f"Choose one of {', '.join(self.grids)}.")
        self.t_distribution, self.logit_mean, self.logit_std = t_distribution, float(logit_mean), float(logit_std)
        self.eps_t, self.t_min, self.t_max = float(eps_t), float(t_min), float(t_max)
        self.shift, self.time_scale = float(shift), float(time_scale)
        ends = self.shifted(torch.tensor([t_min, t_max], dtype=torch.float64))
        lo, hi = self.sigma_of_t(ends).tolist()
        super().__init__(lo, hi, rho=rho, grid=grid)

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """(3): sigma = t / (1 - t)."""
        return t / (1 - t)

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """(3): t = sigma / (1 + sigma)."""
        return sigma / (1 + sigma)

    def shifted(self, t: Tensor) -> Tensor:
        """(6): SD3's timestep shift alpha t / (1 + (alpha - 1) t) (identity for alpha = 1; diffusers' `shift`)."""
        return self.shift * t / (1 + (self.shift - 1) * t)

    def scalings(self, sigma: Tensor) -> Scalings:
        """(4): c_skip = c_in = 1 / (1 + sigma) = 1 - t, c_out = -t, c_noise = M t (precond.py, flow row)."""
        return flow_scalings(sigma, self.time_scale)

    def sample_training_sigma(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """t ~ U(eps_t, 1) (Liu et al.) or (5) logit(t) ~ N(m, s^2) (SD3); sigma(t) ([n], float64 where supported)."""
        if self.t_distribution == "uniform":
            return super().sample_training_sigma(n, generator=generator, device=device)
        device = torch.device(device)
        z = torch.randn(n, generator=generator, device=device, dtype=_float_dtype(device))
        # sigma(sigmoid(u)) = exp(u): the logit-normal t is a log-normal sigma, without rounding t near 1
        return (self.logit_mean + self.logit_std * z).exp()

    def inference_sigmas(self, steps: int) -> Tensor:
        """Uniform in t from t_max to t_min, shifted by (6), as sigma(t) (diffusers' grid), or a common grid; then 0."""
        if self.grid in COMMON_GRIDS:
            return super().inference_sigmas(steps)
        if steps < 1:
            raise ValueError(f"need at least one step, got {steps}")
        t = self.shifted(torch.linspace(self.t_max, self.t_min, steps, dtype=torch.float64))
        return torch.cat([self.sigma_of_t(t), t.new_zeros(1)])

    def prior_std(self, sigma: float) -> float:
        """x_T ~ N(0, (1 + sigma^2) I) in the sigma view: x_t ~ N(0, ((1 - t)^2 + t^2) I) (docstring above)."""
        return math.sqrt(1.0 + float(sigma) ** 2)

    def __repr__(self) -> str:
        dist = (f"logit_normal(m={self.logit_mean:g}, s={self.logit_std:g})" if self.t_distribution == "logit_normal"
                else f"uniform(eps_t={self.eps_t:g})")
        return (f"FlowScheduler(t ~ {dist}, t_min={self.t_min:g}, t_max={self.t_max:g}, shift={self.shift:g}, "
                f"grid={self.grid!r})")
