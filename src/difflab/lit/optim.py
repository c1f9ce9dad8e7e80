"""Learning-rate schedules as plain objects (picklable, restored exactly on resume)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
LRSchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class WarmupDecay:
    """LR multiplier: linear warm-up over `warmup_steps`, then constant or cosine decay to `min_ratio`."""

    def __init__(self, warmup_steps: int = 0, total_steps: int | None = None, decay: str = "constant", min_ratio: float = 0.0):
        if decay not in ("constant", "cosine"):
            raise ValueError(f"unknown LR decay {decay!r}; choose 'constant' or 'cosine'")
        if decay == "cosine" and not total_steps:
            raise ValueError("cosine LR decay needs total_steps (e.g. ${trainer.max_steps})")
        self.warmup_steps, self.total_steps, self.decay, self.min_ratio = warmup_steps, total_steps, decay, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    decay: str = "constant",
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR around `WarmupDecay` (its state is saved in checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupDecay(warmup_steps, total_steps, decay, min_ratio))


def trainable_optimizers(module: torch.nn.Module, optimizer_factory: OptimizerFactory,
                         lr_scheduler_factory: LRSchedulerFactory | None = None) -> object:
    """Lightning's `configure_optimizers` value: the configured optimizer over the trainable parameters (frozen
    parts such as a first stage left out) and its per-step LR schedule, exactly as configured."""
    optimizer = optimizer_factory([p for p in module.parameters() if p.requires_grad])
    if lr_scheduler_factory is None:
        return optimizer
    schedule = lr_scheduler_factory(optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

