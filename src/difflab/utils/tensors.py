"""Tensor helpers used by the math and the samplers, and the autocast of a precision."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


def cuda_sync(device: torch.device | str) -> None:
    """Wait for the device's queued kernels (CUDA only) so that wall-clock timings are honest."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so that `t` ([B]) broadcasts against a [B, ...] tensor of `ndim` dims."""
    if t.ndim > ndim:
        raise ValueError(f"cannot append dims: tensor has {t.ndim} dims, target has {ndim}")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def as_batch(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or [B] noise level to a [B] tensor on x's device (dtype kept if a tensor)."""
    if not torch.is_tensor(sigma):
        sigma = torch.tensor(float(sigma), dtype=torch.float64)
    sigma = sigma.to(x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or have shape [{x.shape[0]}], got {tuple(sigma.shape)}")
    return sigma


AUTOCAST = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for the network under `precision` (32 | bf16 | fp16); a no-op for 32."""
    if precision not in AUTOCAST:
        raise ValueError(f"{precision!r} is not a precision: use 32, bf16 or fp16")
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
