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


class KillDuringCheckpointWrite(L.Callback):
    """A real SIGKILL in the middle of the checkpoint write of step `step`: half of the bytes reach the temp file,
    then the process kills itself (difflab's atomic write must leave the previous checkpoint intact)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step != self.step - 1:
            return
        import io
        import os
        import signal

        from difflab.utils import checkpoint_files

        def half_then_die(obj, file) -> None:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            file.write(buffer.getvalue()[: buffer.tell() // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        checkpoint_files._serialize = half_then_die


class SignalAt(L.Callback):
    """Sends the process `signal` (a name: SIGTERM, SIGINT) `times` times at the start of step `step`, as a scheduler
    or Ctrl-C would."""

    def __init__(self, step: int, signal: str = "SIGTERM", times: int = 1) -> None:
        self.step, self.signal, self.times = step, signal, times

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        import os
        import signal

        if trainer.global_step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, self.signal))
