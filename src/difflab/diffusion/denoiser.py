"""The denoiser type and the noise every sampler draws: what `samplers/` builds on.

A denoiser is `D(x, sigma [B], cond) -> x0_hat` (float32) in the sigma view x = x0 + sigma * eps
(EDM eq. 1). Randomness is per sample: a `StackedGenerator` holds one torch.Generator per image, so
image i depends on its own seed alone (EDM `generate.py`).

Notation:
    x        [B, ...] noisy sample at noise level sigma
    sigma    [B] noise levels (a grid entry broadcast by `sigma_batch`)
    s        log sigma, the variable `integrate_log_sigma` integrates in
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor


class DenoiseFn(Protocol):
    """D(x, sigma, cond) -> x0_hat."""

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor: ...


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
    """A grid entry as a [B] noise-level tensor on x's device (float64 kept for exact c_noise).

    The grid lives on the host; the copy of its entry to a GPU is queued without waiting for the GPU (a blocking
    host-to-device copy would synchronise once per sampler step)."""
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    return sigma.to(x.device, dtype, non_blocking=True).expand(x.shape[0])


def integrate_log_sigma(rhs: Callable[[float, np.ndarray], np.ndarray], y0: np.ndarray, sigma_from: float,
                       sigma_to: float, rtol: float, atol: float) -> np.ndarray:
    """RK45 (scipy's solve_ivp) of dy/d(log sigma) = rhs(log sigma, y) between two positive noise levels."""
    if sigma_from <= 0 or sigma_to <= 0:
        raise ValueError(f"the ODE is integrated between positive noise levels, got {sigma_from} -> {sigma_to}")
    sol = solve_ivp(rhs, (np.log(sigma_from), np.log(sigma_to)), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    return sol.y[:, -1]
