"""What every sampler shares: the registry, the signature, and per-sample noise.

A sampler is a pure function

    sample(denoise_fn, x_T, sigmas, *, cond=None, generator=None, callback=None, **knobs) -> x0

where `denoise_fn(x, sigma [B], cond) -> x0_hat` (float32), `x_T` is the prior sample at
sigmas[0] (already scaled), and `sigmas` is a descending float64 grid ending at 0. Step
arithmetic uses float64 coefficients; no state survives between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor


class DenoiseFn(Protocol):
    """D(x, sigma, cond) -> x0_hat."""

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor: ...


SamplerFn = Callable[..., Tensor]
StepCallback = Callable[[dict[str, Any]], None]


class SamplerRegistry(dict):
    """name -> sampler function; an unknown name is a KeyError that lists the known ones."""

    def __missing__(self, name: str) -> SamplerFn:
        raise KeyError(f"unknown sampler {name!r}; available samplers: {', '.join(sorted(self))}")


SAMPLERS: SamplerRegistry = SamplerRegistry()


def register(name: str) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator adding a sampler function to `SAMPLERS` under `name`."""

    def add(fn: SamplerFn) -> SamplerFn:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is registered twice")
        SAMPLERS[name] = fn
        return fn

    return add


class StackedGenerator:
    """One torch.Generator per sample, so that image i depends on its own seed alone (EDM `generate.py`)."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw [len(seeds), *shape[1:]] with row i from generator i."""
        if shape[0] != len(self.generators):
            raise ValueError(f"batch of {shape[0]} for {len(self.generators)} per-sample generators")
        rows = [torch.randn(tuple(shape[1:]), generator=g, device=self.device, dtype=dtype) for g in self.generators]
        return torch.stack(rows)

    def rand(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) draws, [len(seeds), *shape[1:]], row i from generator i."""
        if shape[0] != len(self.generators):
            raise ValueError(f"batch of {shape[0]} for {len(self.generators)} per-sample generators")
        rows = [torch.rand(tuple(shape[1:]), generator=g, device=self.device, dtype=dtype) for g in self.generators]
        return torch.stack(rows)


Generator = torch.Generator | StackedGenerator | None


def randn_like(x: Tensor, generator: Generator = None) -> Tensor:
    """Standard normal noise shaped like x, from a torch.Generator, a StackedGenerator or the global RNG."""
    if isinstance(generator, StackedGenerator):
        return generator.randn(x.shape, dtype=x.dtype).to(x.device)
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def sigma_batch(sigma: Tensor, x: Tensor) -> Tensor:
    """A grid entry as a [B] noise-level tensor on x's device (float64 kept for exact c_noise)."""
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    return sigma.to(x.device, dtype).expand(x.shape[0])


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
