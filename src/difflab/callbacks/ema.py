"""Exponential moving average of the weights, used for validation, sampling and checkpoints.

Papers: Polyak averaging as used by Ho et al. 2020 (decay 0.9999) and Song & Ermon 2020; the
warm-up decay min(decay, (1 + n) / (10 + n)) follows the TensorFlow `ExponentialMovingAverage`
num_updates rule used by the ADM / latent-diffusion codebases.

The averaged weights are saved in every checkpoint under the top-level key "ema"
({"decay", "num_updates", "params": {name: tensor}}), so `sample.py` can read them directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor


class EMA(L.Callback):
    """Keeps float32 EMA copies of all trainable parameters, updated with `torch._foreach_lerp_`."""

    def __init__(self, decay: float = 0.9999, warmup: bool = True, update_every: int = 1, validate_with_ema: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.update_every = decay, warmup, max(1, update_every)
        self.validate_with_ema = validate_with_ema
        self.num_updates = 0
        self.names: list[str] = []
        self.params: list[Tensor] = []
        self._loaded: dict[str, Tensor] | None = None
        self._swapped = False
        self._last_step = -1  # global step of the last update: one update per optimizer step

    def current_decay(self) -> float:
        """Decay used for the next update (warm-up makes early averages track the weights closely)."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @staticmethod
    def _trainable(pl_module: L.LightningModule) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = self._trainable(pl_module)
        self.names = [n for n, _ in named]
        self._last_step = trainer.global_step
        if self._loaded is not None:
            missing = [n for n in self.names if n not in self._loaded]
            if missing:
                raise RuntimeError(f"the checkpoint's EMA lacks {len(missing)} parameters, e.g. {missing[:3]}")
            self.params = [self._loaded[n].to(p.device, torch.float32).clone() for n, p in named]
            self._loaded = None
        else:
            self.params = [p.detach().float().clone() for _, p in named]

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step  # unchanged across the micro-batches of gradient accumulation
        if step == self._last_step or step % self.update_every != 0:
            return
        self._last_step = step
        weight = 1.0 - self.current_decay()
        current = [p.detach().float() for _, p in self._trainable(pl_module)]
        torch._foreach_lerp_(self.params, current, weight)
        self.num_updates += 1

    @contextmanager
    def swapped(self, pl_module: L.LightningModule) -> Iterator[None]:
        """Within the block the module holds the EMA weights; the training weights come back after."""
        if self._swapped or not self.params:
            yield
            return
        live = [p for _, p in self._trainable(pl_module)]
        backup = [p.detach().clone() for p in live]
        with torch.no_grad():
            torch._foreach_copy_(live, self.params)
        self._swapped = True
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(live, backup)
            self._swapped = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validate_with_ema and not trainer.sanity_checking and self.params:
            self._ctx = self.swapped(pl_module)
            self._ctx.__enter__()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            self._ctx = None
            ctx.__exit__(None, None, None)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written during validation (best.ckpt) must hold the training weights, not the EMA ones.
        if self._swapped:
            raise RuntimeError("internal error: checkpoint requested while EMA weights are swapped in")
        checkpoint["ema"] = {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "params": {n: p.detach().cpu().clone(memory_format=torch.contiguous_format)  # the standard layout
                       for n, p in zip(self.names, self.params)},
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ema")
        if state is None:
            return
        self.num_updates = int(state["num_updates"])
        self._loaded = dict(state["params"])


def find_ema(trainer: L.Trainer) -> EMA | None:
    """The trainer's EMA callback, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)
