"""What every sampler shares: the registry, the signature, and per-sample noise.

A sampler is a pure function

    sample(denoise_fn, x_T, sigmas, *, cond=None, generator=None, callback=None, **knobs) -> x0

where `denoise_fn(x, sigma [B], cond) -> x0_hat` (float32, `difflab.diffusion.denoiser`), `x_T` is the prior sample at
sigmas[0] (already scaled), and `sigmas` is a descending float64 grid ending at 0. Step
arithmetic uses float64 coefficients; no state survives between calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.denoiser import DenoiseFn, Generator, StackedGenerator, randn_like, sigma_batch

__all__ = ["ALWAYS", "SAMPLERS", "DenoiseFn", "Generator", "SamplerInfo", "StackedGenerator", "StepCallback",
           "ancestral_loop", "ancestral_step", "randn_like", "register", "sigma_batch", "to_d"]

SamplerFn = Callable[..., Tensor]
StepCallback = Callable[[dict[str, Any]], None]
ALWAYS = "always"  # `noise=ALWAYS`: the sampler draws fresh noise whatever its knobs
COMMON = ("cond", "generator", "callback")  # keyword arguments every sampler takes; the rest are its knobs


@dataclass(frozen=True)
class SamplerInfo:
    """A registered sampler: its function and what it declares about itself.

    order   convergence order of its deterministic part (global error ~ step^order)
    noise   None: deterministic; ALWAYS: always stochastic; else the knob whose non-zero value adds noise
    consistency  True: it samples a consistency model (its denoiser is taken as the consistency function, e.g. a
            distilled student's); with an ordinary denoiser it solves neither the ODE nor the SDE
    """

    name: str
    fn: SamplerFn
    order: int
    noise: str | None = None
    consistency: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.fn(*args, **kwargs)

    def options(self) -> dict[str, Any]:
        """The sampler's knobs with their defaults."""
        params = inspect.signature(self.fn).parameters
        return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in COMMON}

    def is_deterministic(self, knobs: Mapping[str, Any]) -> bool:
        """Whether these knobs map x_T to x0 without fresh noise."""
        if self.noise is None:
            return True
        if self.noise == ALWAYS:
            return False
        return float(knobs.get(self.noise, self.options()[self.noise])) == 0.0


class SamplerRegistry(dict):
    """name -> SamplerInfo (callable like its function); an unknown name is a KeyError listing the known ones."""

    def __missing__(self, name: str) -> SamplerInfo:
        raise KeyError(f"unknown sampler {name!r}; available samplers: {', '.join(sorted(self))}")


SAMPLERS: SamplerRegistry = SamplerRegistry()


def register(name: str, *, order: int, noise: str | None = None,
             consistency: bool = False) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator adding a sampler function to `SAMPLERS` with its order, stochastic knob and whether it samples
    consistency models (see SamplerInfo)."""

    def add(fn: SamplerFn) -> SamplerFn:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is registered twice")
        info = SamplerInfo(name, fn, order, noise, consistency)
        if noise not in (None, ALWAYS) and noise not in info.options():
            raise ValueError(f"sampler {name!r} declares noise knob {noise!r}, which it does not take")
        SAMPLERS[name] = info
        return fn

    return add


def to_d(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """The probability-flow ODE direction dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3)."""
    return (x - x0) / sigma.to(x.dtype)


def ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split sigma_next into (sigma_down, sigma_up): deterministic and fresh-noise parts.

    sigma_up^2 = eta^2 sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 is DDIM eq. (16)'s sigma_t(eta)
    in the sigma view (divided by sqrt(alpha_bar_prev)); eta = 1 gives the DDPM posterior variance
    beta_tilde (DDPM eq. 7), eta = 0 the deterministic DDIM step.
    """
    if eta == 0 or sigma_next == 0:
        return sigma_next, torch.zeros_like(sigma_next)
    sigma_up = (eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt()).clamp(max=sigma_next)
    sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
    return sigma_down, sigma_up


def ancestral_loop(denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor,
                   step: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], *, cond: object, generator: Generator,
                   callback: StepCallback | None, eta: float, s_noise: float) -> Tensor:
    """Ancestral sampling around a deterministic `step(x, x0, sigma, sigma_down)`: each step goes down to sigma_down,
    then adds sigma_up s_noise z (`ancestral_step`); x = D(x, sigma) on a step to sigma_down = 0 (the last)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(sigma, x), cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = x0 if sigma_down == 0 else step(x, x0, sigma, sigma_down)
        if sigma_up > 0:
            x = x + (sigma_up * s_noise).to(x.dtype) * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0})
    return x
