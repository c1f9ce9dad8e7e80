"""The LoRA file of a `model=lora` run: the trained adapters in the web UI's format, <run dir>/lora.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from difflab.lit.lora import save_lora


class LoraFile(L.Callback):
    """Writes the adapters of a `lit.lora.lora_model` to `path` (atomically) with every checkpoint and at the end."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            save_lora(pl_module, self.path)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)
