"""The training progress display: step / max_steps, images/s, loss and the ETA to the end of training.

Lightning's own bar counts batches of one epoch ("Epoch 1/-2") in it/s; this replaces it (a `ProgressBar`, so
Lightning adds no other) with `difflab.utils.progress.Progress` over the whole run: a rewritten line on a
terminal, plain log lines elsewhere (SLURM logs, pipes). Validation and metric passes show their own lines.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

from difflab.utils.progress import Progress

__all__ = ["TrainProgress"]


def batch_images(batch: Any) -> int:
    """Images in a training batch (the first tensor of a dict batch: images or cached latents)."""
    first = (batch["image"] if "image" in batch else next(iter(batch.values()))) if isinstance(batch, dict) else batch[0]
    return int(first.shape[0])


def total_steps(trainer: L.Trainer) -> int:
    """The step count training ends at: max_steps, else max_epochs x optimizer steps per epoch (0 when unknown)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    per_epoch = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
    epochs = trainer.max_epochs or -1
    return int(epochs * per_epoch) if epochs > 0 and math.isfinite(per_epoch) else 0


class TrainProgress(ProgressBar):
    """Training progress over the whole run, on rank 0; off a terminal a plain log line for every `every` of the
    run and whenever `interval` seconds have passed since the last one."""

    def __init__(self, interval: float = 30.0, every: float = 0.1) -> None:
        super().__init__()
        self.interval, self.every = float(interval), float(every)
        self._enabled = True
        self.progress: Progress | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        enabled = self._enabled and trainer.is_global_zero
        self.progress = Progress("train step", total_steps(trainer), "", rate_unit="images", initial=trainer.global_step,
                                 interval=self.interval, every=self.every, enabled=enabled)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.progress is None:
            return
        loss = trainer.progress_bar_metrics.get("train/loss")
        self.progress.counted += batch_images(batch) * trainer.world_size
        self.progress.set(trainer.global_step, counted=0, loss=float(loss) if loss is not None else None)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is not None:
            self.progress.close()
