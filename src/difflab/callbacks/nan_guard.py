"""Stop a run on a non-finite loss before a corrupted model reaches any checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from difflab.errors import UserError


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

    def check(self, trainer: L.Trainer) -> None:
        """Raise NonFiniteLossError if any loss since the last check was NaN/inf."""
        if self._bad is None or not bool(self._bad):
            return
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        hint = f" The last good checkpoint is {last}; resume with ckpt_path={last}." if last.exists() else ""
        raise NonFiniteLossError(
            f"non-finite training loss by step {trainer.global_step}; no checkpoint was written with these weights."
            f"{hint} Try a lower model.optimizer.lr, trainer.gradient_clip_val, or trainer.precision=32/bf16-mixed."
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)
