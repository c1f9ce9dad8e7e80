"""Test-only callbacks for multi-process and cluster runs (used through `+callbacks.*` overrides)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from difflab.callbacks.ema import find_ema


class DumpRankState(L.Callback):
    """At the end of training every rank saves its EMA weights and step to `<run dir>/rank<r>.pt`."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ema = find_ema(trainer)
        state = {"step": trainer.global_step, "ema": dict(zip(ema.names, ema.params)) if ema else {}}
        torch.save(state, Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt")


class SlowSteps(L.Callback):
    """Sleeps after each step, so that a scheduler's signal reliably arrives in the middle of training."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        (Path(trainer.default_root_dir) / "progress.txt").write_text(f"{trainer.global_step}\n")
        time.sleep(self.seconds)
