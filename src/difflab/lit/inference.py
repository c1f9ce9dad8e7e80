"""The network as `DiffusionModule.generate` runs it: the sampling dtype, the memory format and an optional compiled
(CUDA-graphed on a GPU) call. `generate` runs it under `torch.inference_mode`.

- dtype: under an autocast of bf16 / fp16 (sample.py and evaluate.py `precision=bf16|fp16` wrap sampling in one), a
  float32 network runs wholly in that dtype, from a cast copy of its weights (as diffusers' pipelines run a
  `.to(dtype)` UNet), instead of autocast's per-op casts and float32 normalisations. The preconditioning and every
  sampler step stay in float32/64 (DESIGN rule 4): `Denoiser.raw` returns F as float32.
- memory format: channels_last where it pays (`channels_last_on`); the input follows the weights.
- compile: `torch.compile` of the network call; on CUDA in mode "reduce-overhead" (CUDA graphs: one replay per
  sampler step instead of hundreds of kernel launches, which pays at small batches). The compiled call is kept
  between `generate` calls; its weight copy (if any) is refreshed from the live weights at every call.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import Tensor, nn

from difflab.errors import ConfigError


def check_channels_last(value: Any, key: str = "model.channels_last") -> bool | str:
    """`value` if it is a channels_last setting (true, false or auto), else a ConfigError naming `key`."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError.bad_value(key, f"{value!r} is not a memory-format setting",
                                f"Use {key}=auto (channels_last on the CPU, where it pays), true or false.")


def check_switch(value: Any, key: str) -> bool:
    """`value` if it is a boolean, else a ConfigError naming `key` (a string such as "yes" is not silently true)."""
    if isinstance(value, bool):
        return value
    raise ConfigError.bad_value(key, f"{value!r} is not true or false", f"Use {key}=true or {key}=false.")


def channels_last_on(setting: bool | str, device: torch.device | str) -> bool:
    """Whether the network runs in channels_last on `device`: `auto` means on the CPU, where oneDNN's NHWC
    convolutions run 1.3-1.8x faster than NCHW ones (docs/performance.md); GPUs keep NCHW until measured."""
    return torch.device(device).type == "cpu" if setting == "auto" else bool(setting)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The lower-precision dtype of an autocast active for `device`'s type, None when none is active."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _first_param(net: nn.Module) -> Tensor | None:
    return next(net.parameters(), None)


def is_channels_last(net: nn.Module) -> bool:
    """Whether every 4-D weight of `net` is in channels_last (True for a network without any)."""
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.ndim == 4)


class NetworkCall(nn.Module):
    """net(x, c_noise, cond) with x (and a floating cond) in the network's dtype and memory format; with `graphs`,
    through a CUDA-graphed compiled call whose output is copied out before the next replay overwrites it."""

    def __init__(self, net: nn.Module, channels_last: bool, compile: bool, device: torch.device) -> None:
        super().__init__()
        self.net = net
        param = _first_param(net)
        self.dtype = param.dtype if param is not None else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.graphs = compile and device.type == "cuda"
        already = getattr(net, "_compiled_call_impl", None) is not None  # model.compile=true compiled it for training
        self.call = torch.compile(net, mode="reduce-overhead" if self.graphs else None) if compile and not already else net

    def forward(self, x: Tensor, c_noise: Tensor, cond: Any = None) -> Tensor:
        """F(x, c_noise, cond) (B, C, H, W) in the network's dtype."""
        x = x.to(self.dtype)  # (B, C, H, W), or any shape a non-image network takes
        if x.ndim == 4:
            x = x.contiguous(memory_format=self.memory_format)
        if isinstance(cond, Tensor) and cond.is_floating_point():
            cond = cond.to(self.dtype)
        low = self.dtype in (torch.bfloat16, torch.float16)  # the whole network in its dtype: no autocast inside
        with torch.autocast(x.device.type, enabled=False) if low else contextlib.nullcontext():
            if self.graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out = self.call(x, c_noise, cond)
        return out.clone() if self.graphs else out


def _cast_copy(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A frozen copy of `net` in `dtype` (weights and floating buffers), with none of its compiled state."""
    twin = copy.deepcopy(net).requires_grad_(False).to(dtype)
    for module in twin.modules():
        module._compiled_call_impl = None  # a compiled forward would still call the original module
    return twin


def _refresh(twin: nn.Module, net: nn.Module) -> None:
    """Copy the live weights (and buffers) of `net` into its cast copy `twin`."""
    with torch.no_grad():
        for mine, theirs in zip(twin.state_dict().values(), net.state_dict().values()):
            mine.copy_(theirs)


class SamplingNetworks:
    """The `NetworkCall` that `generate` samples through, per (device, dtype, format, compile); at most one kept."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.call: NetworkCall | None = None

    def get(self, net: nn.Module, device: torch.device, channels_last: bool, compile: bool) -> NetworkCall:
        """The network call for sampling `net` on `device` under the autocast now active (see the module docstring).

        A float32 network under a bf16/fp16 autocast gets a cast copy (refreshed from `net` on every call); the
        memory format of `net` itself is set in place (values unchanged)."""
        param = _first_param(net)
        low = autocast_dtype(device)
        cast = low if param is not None and param.dtype == torch.float32 and low is not None else None
        if channels_last != is_channels_last(net):
            net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        key = (str(device), cast, channels_last, compile, id(net))
        if key != self.key or self.call is None:
            twin = _cast_copy(net, cast) if cast is not None else net
            self.key, self.call = key, NetworkCall(twin, channels_last, compile, device)
        elif cast is not None:
            _refresh(self.call.net, net)
        return self.call

    def clear(self) -> None:
        """Drop the kept call (and its weight copy)."""
        self.key, self.call = None, None
