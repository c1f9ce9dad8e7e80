"""Training throughput: `perf/train_images_per_sec` over the training steps themselves."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from difflab.utils.tensors import cuda_sync


class TrainThroughput(L.Callback):
    """Images per second of training steps (forward, backward, optimizer; all ranks), logged every `log_every_n_steps`.

    The clock runs from each batch's start to its end, so data-loading waits, validation and the
    metric passes (which run after the batch) are excluded: the number measures the model's cost.
    """

    def __init__(self, log_every_n_steps: int = 50) -> None:
        self.log_every_n_steps = max(1, log_every_n_steps)
        self._t0 = 0.0
        self._images = 0
        self._seconds = 0.0
        self.last: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        cuda_sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        cuda_sync(pl_module.device)
        self._seconds += time.perf_counter() - self._t0
        images = (batch["image"] if "image" in batch else next(iter(batch.values()))) if isinstance(batch, dict) else batch[0]
        self._images += int(images.shape[0]) * trainer.world_size
        if trainer.global_step % self.log_every_n_steps == 0 and self._seconds > 0:
            self.last = self._images / self._seconds
            pl_module.log("perf/train_images_per_sec", self.last, on_step=True, on_epoch=False, rank_zero_only=True)
            self._images, self._seconds = 0, 0.0
