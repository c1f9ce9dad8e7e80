"""Test-only callbacks that interrupt or poison a run at a given step (used through `+callbacks.*` overrides)."""

from __future__ import annotations

import lightning as L
import torch


class SimulatedKill(RuntimeError):
    """Stands in for SIGKILL: raised at the start of a step, after the previous step's checkpoint was written."""


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise SimulatedKill(f"killed at step {self.step}")


class PoisonAt(L.Callback):
    """Sets every weight to NaN before step `step`, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))
