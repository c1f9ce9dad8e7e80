"""Stop a run on a non-finite loss or weights before a corrupted model reaches any checkpoint, sample grid or metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from difflab.errors import UserError
from difflab.callbacks.ema import find_ema


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite (the recipe diverged: learning rate, precision, data)."""


class FiniteLossGuard(L.Callback):
    """Accumulates a non-finite flag on the device (no sync per step); checks it every `check_every_n_steps`
    steps and before every checkpoint is written, so no checkpoint ever holds weights updated by a NaN loss."""

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, check_every_n_steps)
        self._bad: Tensor | None = None
        self._first_bad_step: Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach())
        self._bad = bad if self._bad is None else (self._bad | bad)
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check(trainer)

    def check(self, trainer: L.Trainer, what: str = "checkpoint") -> None:
        """Raise NonFiniteLossError if any loss since the last check was NaN/inf (before a `what` is written)."""
        if self._bad is None or not bool(self._bad):
            return
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        hint = f" The last good checkpoint is {last}; resume with ckpt_path={last}." if last.exists() else ""
        raise NonFiniteLossError(
            f"non-finite training loss by step {trainer.global_step}; no {what} was written with these weights."
            f"{hint} Try a lower model.optimizer.lr, trainer.gradient_clip_val, or trainer.precision=32/bf16-mixed."
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        check_finite_state(trainer, pl_module, "checkpoint")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)


def _non_finite(tensors: Any) -> bool:
    return any(not bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def check_finite_state(trainer: L.Trainer, pl_module: L.LightningModule, what: str) -> None:
    """Raise NonFiniteLossError before a `what` (checkpoint, sample grid, metrics) is made from a non-finite
    state: a NaN/inf loss seen by the guard since its last check, or non-finite weights or EMA weights."""
    guard = next((cb for cb in trainer.callbacks if isinstance(cb, FiniteLossGuard)), None)
    if guard is not None:
        guard.check(trainer, what)
    ema = find_ema(trainer)
    weights = "weights" if _non_finite(pl_module.parameters()) else ""
    weights = weights or ("EMA weights" if ema is not None and _non_finite(ema.params) else "")
    if weights:
        raise NonFiniteLossError(
            f"non-finite {weights} at step {trainer.global_step}; no {what} was written from them. The recipe "
            "diverged: try a lower model.optimizer.lr, trainer.gradient_clip_val, or trainer.precision=32/bf16-mixed, "
            "and resume from the last checkpoint of the run folder (ckpt_path=<run>/checkpoints/last.ckpt).")
