"""Sample grids during and at the end of training, with the EMA weights when an EMA callback is present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from difflab.callbacks.ema import find_ema
from difflab.callbacks.nan_guard import check_finite_state
from difflab.evaluation.image_record import image_parameters
from difflab.utils.images import save_grid


class SampleGrid(L.Callback):
    """Every `every_n_steps` and at the end of training, sample `n` images (fixed seed) and save/log a grid."""

    def __init__(self, every_n_steps: int = 1000, n: int = 64, seed: int = 0, batch_size: int | None = None,
                 dirname: str = "samples", use_ema: bool = True, at_train_end: bool = True) -> None:
        self.every_n_steps, self.n, self.seed, self.batch_size = every_n_steps, n, seed, batch_size
        self.dirname, self.use_ema, self.at_train_end = dirname, use_ema, at_train_end
        self.last_path: Path | None = None

    def _cond(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor | None, dict[str, Any] | None]:
        """The model's own draw of n conditions (class i mod K: one row per class; the first validation vectors), and
        the first image's (what the grid's `parameters` chunk names)."""
        requests = pl_module.condition.draw(self.n, trainer.datamodule)
        rows = pl_module.condition.rows(requests)
        return pl_module.condition.to_net(requests.values), rows[0] if rows else None

    def sample_and_save(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> Path | None:
        """Generate the grid on global rank 0 and write it under <run dir>/<dirname>/<tag>.png."""
        if not trainer.is_global_zero:
            return None
        check_finite_state(trainer, pl_module, "sample grid")
        ema = find_ema(trainer) if self.use_ema else None
        cond, row = self._cond(trainer, pl_module)
        if ema is not None:
            with ema.swapped(pl_module):
                images, _ = pl_module.generate(self.n, seed=self.seed, batch_size=self.batch_size, cond=cond)
        else:
            images, _ = pl_module.generate(self.n, seed=self.seed, batch_size=self.batch_size, cond=cond)
        info = image_parameters(pl_module, seed=self.seed, index=0, row=row, extra={
            "Grid": f"{self.n} images", "Step": trainer.global_step, "EMA": ema is not None,
            "Run": str(Path(trainer.default_root_dir).resolve())})
        path = save_grid(images, Path(trainer.default_root_dir) / self.dirname / f"{tag}.png", parameters=info)
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples/grid", [str(path)], step=trainer.global_step, caption=[tag])
        return path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        last_step = self.at_train_end and trainer.max_steps > 0 and step >= trainer.max_steps  # final.png covers it
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and not last_step:
            self.sample_and_save(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_train_end:
            self.sample_and_save(trainer, pl_module, "final")
