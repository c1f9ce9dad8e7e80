"""Noise schedules, all seen through the noise level sigma.

Papers: Ho et al. 2020 (DDPM), Nichol & Dhariwal 2021 (improved DDPM, cosine schedule),
Song et al. 2021 (DDIM), Karras et al. 2022 (EDM), Lin et al. 2024 (timestep spacing).

Notation (code name -> paper symbol):
    betas           beta_t, DDPM variance schedule, code index t = 0..T-1 (paper t = 1..T)
    alphas_cumprod  alpha_bar_t = prod_{s<=t} (1 - beta_s)                 DDPM eq. (4)
    x_vp            x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (VP, variance preserving)
    sigma           sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)          EDM Table 1, VP column
    x               x = x_vp / sqrt(alpha_bar_t) = x_0 + sigma eps           DDIM eq. (14), EDM eq. (1)
    c_noise         the network's noise-level input; for DDPM-trained nets the (fractional) timestep t

A scheduler owns: the training distribution of sigma, the preconditioning (c_skip, c_out, c_in,
c_noise, see `precond.py`), the standard deviation of the prior at sigma_max, and the inference
sigma grid for a number of steps. It is plain data plus pure methods: no state changes on use.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

from difflab.diffusion.precond import PREDICTIONS, Scalings, vp_scalings
from difflab.diffusion.sigma_grids import (
    AYS_LEVELS,
    ays_sigmas,
    beta_sigmas,
    check_ays_range,
    time_uniform_sigmas,
)
from difflab.errors import ConfigError

Grid = Literal["leading", "trailing", "linspace", "simple", "karras", "logsnr", "ays", "ays_sdxl", "sgm_uniform",
               "beta", "optimized"]
# the web UI's schedule types beyond Karras and exponential (`sigma_grids.py`; simple is a discrete spacing)
SCHEDULE_TYPES: tuple[str, ...] = ("ays", "ays_sdxl", "sgm_uniform", "beta", "simple")
# grids every scheduler offers
COMMON_GRIDS: tuple[str, ...] = ("karras", "logsnr", "ays", "ays_sdxl", "sgm_uniform", "beta", "optimized")
GRIDS: tuple[str, ...] = ("leading", "trailing", "linspace", "simple", *COMMON_GRIDS)  # a discrete VP schedule's
OPTIMIZED_NEEDS_MODEL = (
    "grid=optimized depends on the model and the sampler: it is chosen by `difflab.samplers.grids.optimize_grid` "
    "when sampling (generate), not by the scheduler alone"
)


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM Sec. 4: betas increasing linearly from beta_start to beta_end (float64, [T])."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def scaled_linear_betas(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """Latent diffusion / Stable Diffusion: sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end) (float64, [T])."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved DDPM eq. (17): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), betas clipped at max_beta."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - f[1:] / f[:-1]
    return betas.clamp(max=max_beta)


def sigmas_from_betas(betas: Tensor) -> Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), ascending in t (float64, [T])."""
    alphas_cumprod = torch.cumprod(1 - betas.double(), dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM eq. (5): n noise levels from sigma_max down to sigma_min, then a final 0 ([n + 1], float64)."""
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_rho_min, inv_rho_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def logsnr_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """n noise levels uniform in log-SNR = -2 log sigma (geometric in sigma) from sigma_max to sigma_min, then 0.

    Song et al. 2021's VE grid and Lu et al. 2022's (DPM-Solver) "logSNR" spacing ([n + 1], float64)."""
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    return torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)])


def discrete_timesteps(num_train_timesteps: int, steps: int, spacing: str, steps_offset: int = 0) -> Tensor:
    """Descending integer timesteps for `steps` sampling steps (DDIM Sec. 4.2; Lin et al. 2024 Table 2).

    `steps_offset` shifts the leading grid (Stable Diffusion's schedulers use 1: t = 981, ..., 1 for 20 steps).
    """
    T = num_train_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}] for a {T}-step discrete schedule, got {steps}")
    if spacing == "leading":  # DDIM's tau_i = (i * T/steps), the diffusers default
        t = torch.arange(steps, dtype=torch.float64) * (T // steps) + steps_offset
    elif spacing == "trailing":  # ends at T - 1: the first step sees (almost) pure noise
        t = torch.arange(T, 0, -T / steps, dtype=torch.float64).flip(0) - 1
    elif spacing == "linspace":
        t = torch.linspace(0, T - 1, steps, dtype=torch.float64)
    elif spacing == "simple":  # the web UI's "simple": T - 1 - floor(i T / steps), i < steps (sigma_grids.py)
        t = torch.tensor([T - 1 - int(i * (T / steps)) for i in range(steps)][::-1], dtype=torch.float64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {GRIDS}")
    t = t.round().long().flip(0)
    if t[0] >= T:
        raise ValueError(f"steps_offset={steps_offset} with {steps} leading steps passes the last timestep {T - 1}")
    return t


class Scheduler(ABC):
    """Base class: the noise-level view shared by every schedule (EDM Table 1 rows)."""

    kind: str = "base"

    def __init__(self, prediction: str = "eps", grid: str = "leading", rho: float = 7.0) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        if grid not in GRIDS:
            raise ValueError(f"unknown sigma grid {grid!r}; choose one of {GRIDS}")
        self.prediction = prediction
        self.grid = grid
        self.rho = rho

    sigma_min: float
    sigma_max: float

    @abstractmethod
    def scalings(self, sigma: Tensor) -> Scalings:
        """Preconditioning (c_skip, c_out, c_in, c_noise) at noise level sigma ([B])."""

    @abstractmethod
    def sample_training_sigma(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """Draw n training noise levels ([n], float64)."""

    def with_grid(self, grid: str) -> Scheduler:
        """A copy of this scheduler sampling on another grid (checked against the grids it offers and, for Align Your
        Steps, against its noise range)."""
        offered = getattr(type(self), "grids", GRIDS)
        if grid not in offered:
            raise ConfigError.bad_value("sampler.grid", f"unknown sigma grid {grid!r} for {type(self).__name__}",
                                        f"Choose one of {', '.join(offered)}.")
        if grid in AYS_LEVELS:  # published levels: they must lie in this scheduler's range
            check_ays_range(grid, self.sigma_min, self.sigma_max)
        other = copy.copy(self)
        other.grid = grid
        return other

    def prior_std(self, sigma: float) -> float:
        """Std of the prior the sampler starts from at noise level sigma (the grid's first): x_T = prior_std * z."""
        return float(sigma)

    def noise_time(self, sigma: Tensor) -> Tensor:
        """The scheduler's time at noise level sigma: the network's noise input c_noise (increasing in sigma)."""
        return self.scalings(sigma).c_noise

    def inference_sigmas(self, steps: int) -> Tensor:
        """The sampling grid of the grids every scheduler shares: `steps` descending levels then 0 ([steps + 1])."""
        if self.grid == "logsnr":
            return logsnr_sigmas(steps, self.sigma_min, self.sigma_max)
        if self.grid in AYS_LEVELS:
            return ays_sigmas(steps, self.grid, self.sigma_min, self.sigma_max)
        if self.grid == "sgm_uniform":
            return time_uniform_sigmas(steps, self.sigma_min, self.sigma_max, self.noise_time)
        if self.grid == "beta":
            return beta_sigmas(steps, self.sigma_min, self.sigma_max)
        if self.grid == "optimized":
            raise ValueError(OPTIMIZED_NEEDS_MODEL)
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)


class DiscreteVPScheduler(Scheduler):
    """DDPM's T-step VP schedule (linear, scaled-linear or cosine betas), trained on integer timesteps.

    The network sees c_noise = t, the timestep (fractional between table entries, EDM App. C.3.4),
    so that any sigma grid (leading/trailing/linspace spacing of the training timesteps, or Karras)
    can drive a model trained this way.
    """

    kind = "vp"

    def __init__(
        self,
        betas: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        prediction: str = "eps",
        grid: str = "leading",
        rho: float = 7.0,
        steps_offset: int = 0,
    ) -> None:
        super().__init__(prediction=prediction, grid=grid, rho=rho)
        if betas == "linear":
            beta_table = linear_betas(num_train_timesteps, beta_start, beta_end)
        elif betas == "scaled_linear":
            beta_table = scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
        elif betas == "cosine":
            beta_table = cosine_betas(num_train_timesteps, cosine_s)
        else:
            raise ValueError(f"unknown beta schedule {betas!r}; choose 'linear', 'scaled_linear' or 'cosine'")
        self.steps_offset = int(steps_offset)
        self.betas_kind, self.beta_start, self.beta_end = betas, float(beta_start), float(beta_end)
        self.num_train_timesteps = num_train_timesteps
        self.betas = beta_table  # (T,) float64
        self.alphas_cumprod = torch.cumprod(1 - beta_table, dim=0)  # (T,)
        self.sigmas = sigmas_from_betas(beta_table)  # (T,) ascending
        self.log_sigmas = self.sigmas.log()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])
        self._device_tables: dict[str, tuple[Tensor, Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = str(device)
        if key not in self._device_tables:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._device_tables[key] = (self.sigmas.to(device, dtype), self.log_sigmas.to(device, dtype))
        return self._device_tables[key]

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep of sigma by interpolation in log sigma (exact on table entries)."""
        _, log_sigmas = self._tables(sigma.device)
        log_sigma = sigma.to(log_sigmas.dtype).clamp(min=1e-20).log()
        hi = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
        lo = hi - 1
        w = (log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return (lo + w.clamp(0, 1)).to(sigma.dtype)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """sigma at a (fractional) timestep, interpolating log sigma linearly."""
        _, log_sigmas = self._tables(t.device)
        t = t.to(log_sigmas.dtype).clamp(0, len(log_sigmas) - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=len(log_sigmas) - 1)
        w = t - lo
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()

    def scalings(self, sigma: Tensor) -> Scalings:
        """VP preconditioning for the configured prediction target, with c_noise = t(sigma)."""
        c_skip, c_out, c_in = vp_scalings(sigma, self.prediction)
        return Scalings(c_skip, c_out, c_in, self.sigma_to_t(sigma))

    def sample_training_sigma(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """DDPM Algorithm 1: t ~ Uniform({1..T}); returns sigma_t ([n], float64 where supported)."""
        device = torch.device(device)
        sigmas, _ = self._tables(device)
        t = torch.randint(0, self.num_train_timesteps, (n,), generator=generator, device=device)
        return sigmas[t]

    def prior_std(self, sigma: float) -> float:
        """x_t ~ N(0, I) in the VP space is N(0, (1 + sigma^2) I) in the sigma view (DDPM, DDIM, diffusers)."""
        return math.sqrt(1.0 + float(sigma) ** 2)

    def inference_sigmas(self, steps: int) -> Tensor:
        """Sigmas of the spaced training timesteps (or a Karras grid), then 0 (DDIM's alpha_bar_0 := 1)."""
        if self.grid in COMMON_GRIDS:
            return super().inference_sigmas(steps)
        t = discrete_timesteps(self.num_train_timesteps, steps, self.grid, self.steps_offset)
        return torch.cat([self.sigmas[t], self.sigmas.new_zeros(1)])

    def __repr__(self) -> str:
        return (
            f"DiscreteVPScheduler(T={self.num_train_timesteps}, prediction={self.prediction!r}, "
            f"grid={self.grid!r}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g})"
        )
