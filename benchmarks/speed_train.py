"""Training throughput of a `speed_nets.Pair`, difflab beside diffusers, for benchmarks/gpu.py.

A group is one (precision, compile) setting with one or more memory formats: every contestant (side x format) is
built and warmed up alone (its peak memory is measured then: weights, gradients, AdamW state and activations),
then all of them run interleaved rounds (`steps` steps each, the order reversed every other round) and report the
median images/s. One training step is `unet_throughput.make_step`: forward, MSE, backward, AdamW (fp16 with a
gradient scaler). FLOPs per image come from `torch.utils.flop_counter` (one forward + backward, float32, eager).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from speed_nets import Forward, Pair
from unet_throughput import make_step, timed

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class Contestant:
    """One side of a group in one memory format, with its step and what was measured."""

    side: str
    fmt: str
    step: Callable[..., None] | None
    batch: tuple[Tensor, ...]
    peak_gib: float | None = None
    rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Median images/s over the rounds."""
        return statistics.median(self.rates)


@dataclass
class Group:
    """The result of one group: its setting and contestants (keyed "side/format")."""

    preset: str
    precision: str
    compile: bool
    contestants: dict[str, Contestant]
    batch: int = 0


def flops_per_image(model: nn.Module, forward: Forward, batch: tuple[Tensor, ...]) -> float:
    """FLOPs of one training forward + backward per image (float32, eager), counted by torch's flop counter."""
    x, c_noise, target, *extra = (t[:2] for t in batch)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.mse_loss(forward(x, c_noise, *extra).float(), target).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _contestant(model: nn.Module, forward: Forward, side: str, fmt: str, precision: str, compile: bool,
                batch: tuple[Tensor, ...], warmup: int, device: torch.device) -> Contestant:
    """Put `model` in `fmt`, wrap it (compile), warm it up alone and measure its peak memory."""
    model.to(memory_format=FORMATS[fmt])
    x = batch[0].contiguous(memory_format=FORMATS[fmt])
    batch = (x, *batch[1:])
    fwd = forward
    if compile:
        compiled = torch.compile(model)
        fwd = compiled if forward is model else _rebind(forward, model, compiled)
    step = make_step(model, fwd, device, precision)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(*batch)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**30 if device.type == "cuda" else None
    return Contestant(side, fmt, step, batch, peak)


def _rebind(forward: Forward, model: nn.Module, compiled: nn.Module) -> Forward:
    """diffusers' forward lambda, calling the compiled module instead of `model`."""
    def fwd(x: Tensor, c_noise: Tensor, *extra: Tensor) -> Tensor:
        if extra:
            return compiled(x, c_noise, encoder_hidden_states=extra[0], return_dict=False)[0]
        return compiled(x, c_noise, return_dict=False)[0]

    return fwd


def run_group(pair: Pair, precision: str, compile: bool, formats: list[str] | dict[str, list[str]], batch_size: int,
              steps: int, rounds: int, warmup: int, device: torch.device) -> Group:
    """Build, warm up and time every contestant of one group (see the module docstring); `formats` lists the
    memory formats of both sides, or of each side ({"difflab": [...], "diffusers": [...]})."""
    batch = pair.inputs(batch_size, device)
    sides = {"difflab": (pair.ours, pair.ours_fwd), "diffusers": (pair.theirs, pair.theirs_fwd)}
    per_side = formats if isinstance(formats, dict) else {side: list(formats) for side in sides}
    contestants: dict[str, Contestant] = {}
    for side, (model, forward) in sides.items():
        for i, fmt in enumerate(per_side[side]):
            if i:  # a second format needs its own copy: the first keeps its memory format
                model = copy.deepcopy(model)
                forward = model if side == "difflab" else _rebind(forward, model, model)
            contestants[f"{side}/{fmt}"] = _contestant(model, forward, side, fmt, precision, compile, batch, warmup,
                                                       device)
    names = list(contestants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            c = contestants[name]
            c.rates.append(timed(c.step, c.batch, steps, device))
    for c in contestants.values():
        c.step, c.batch = None, ()  # frees the optimizer state and the copies
    for model in (pair.ours, pair.theirs):
        model.zero_grad(set_to_none=True)
        model.to(memory_format=torch.contiguous_format)
    return Group(pair.name, precision, compile, contestants, batch_size)
