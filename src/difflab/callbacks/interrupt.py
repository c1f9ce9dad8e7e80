"""Stopping a training run on SIGTERM or Ctrl-C (SIGINT): a last checkpoint at the current step, the exact command
that resumes it, and the exit status a shell and a scheduler expect (143 = 128 + SIGTERM, 130 = 128 + SIGINT).

The signal handler only records the request. At the end of the current optimizer step (`on_train_batch_end`, after
the EMA update: where ModelCheckpoint saves too, so Lightning resumes it exactly) the callback writes
`<run>/checkpoints/last.ckpt` atomically, like every checkpoint; the process exits at the next hook after the step's
loss is logged (the next batch's start, the epoch's end, or the run's end: before the end-of-run grid and metrics),
printing the command that resumes the run. The resumed run ends exactly where an uninterrupted one would: same
weights, EMA, optimizer and LR schedule, each step logged once. A second signal stops at once, without a
checkpoint (every earlier checkpoint is whole). Under DDP the ranks agree on the step to stop at.

SLURM's SIGUSR1 is left alone: Lightning's requeue path (`hpc_ckpt_<n>.ckpt`, `scontrol requeue`) keeps working,
and the requeued job resumes from the newest checkpoint of its run folder (`utils.cluster.resume_path`).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
DROPPED = ("ckpt_path=", "hydra.run.dir=")  # overrides that the resume command sets itself


def exit_status(signum: int) -> int:
    """The status of a process stopped by `signum`, as a shell reports it (128 + the signal number)."""
    return 128 + int(signum)


def resume_command(run_dir: str | Path, ckpt: str | Path, argv: list[str] | None = None) -> str:
    """The command that resumes this run from `ckpt` in its own folder: the script and its config overrides as given
    (the running Hydra job's, else `argv`), then `ckpt_path=<ckpt>` and, unless `paths.run_dir=` names the folder,
    `hydra.run.dir=<run_dir>`."""
    argv = sys.argv if argv is None else argv
    script = argv[0] if argv else "train.py"
    program = ["python", script] if script.endswith(".py") else [Path(script).name]
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else list(argv[1:])
    kept = [o for o in overrides if not o.lstrip("+~").startswith(DROPPED)]
    folder = [] if any(o.lstrip("+").startswith("paths.run_dir=") for o in kept) else [f"hydra.run.dir={run_dir}"]
    return shlex.join([*program, *kept, *folder, f"ckpt_path={ckpt}"])


class StopOnSignal(L.Callback):
    """On SIGTERM or SIGINT: a checkpoint at `path` (default `<run>/checkpoints/last.ckpt`) at the end of the current
    optimizer step, the resume command on stderr, and exit status 143 or 130 (module docstring). List it after the
    EMA callback: the checkpoint holds the step's EMA update."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.signum: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}
        self._pid = -1
        self._step = -1

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the main process coordinates the stop
            return
        name = signal.Signals(signum).name
        if self.signum is not None:
            sys.stderr.write(f"\n{name} again: stopping at once, without a checkpoint.\n")
            raise SystemExit(exit_status(signum))
        self.signum = signum
        sys.stderr.write(f"\n{name} received: the run stops at the end of this step, with a checkpoint ({name} "
                         "again stops at once, without one).\n")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take over SIGTERM and SIGINT for the training loop (the handlers before it are put back after)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._pid, self.signum, self.saved, self._step = os.getpid(), None, None, trainer.global_step
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _requested(self, trainer: L.Trainer) -> bool:
        requested = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same step (a checkpoint is written by all together)
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        return requested

    def _save(self, trainer: L.Trainer) -> None:
        self.saved = Path(self.path) if self.path else Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(self.saved, weights_only=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """After an optimizer step (not inside gradient accumulation): the checkpoint, when a signal came."""
        stepped, self._step = trainer.global_step != self._step, trainer.global_step
        if stepped and self.saved is None and self._requested(trainer):
            self._save(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.saved is not None:
            self.stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved is not None:
            self.stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A signal after the last step's end: the final state is the checkpoint; else the handlers go back."""
        if self.saved is None and self._requested(trainer):
            self._save(trainer)
        if self.saved is not None:
            self.stop(trainer)
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def stop(self, trainer: L.Trainer) -> None:
        """Print where the checkpoint is and the resume command, exit with 128 + the signal's number."""
        self._restore()
        signum = self.signum or signal.SIGTERM  # a rank that got no signal itself follows the others
        if trainer.is_global_zero:
            name, step = signal.Signals(signum).name, trainer.global_step
            command = resume_command(trainer.default_root_dir, self.saved)
            log.info("stopped by %s at step %d; checkpoint %s", name, step, self.saved)
            sys.stderr.write(f"\nStopped by {name} at step {step}; the checkpoint of this step is {self.saved}. "
                             f"Resume with:\n  {command}\n")
            sys.stderr.flush()
        raise SystemExit(exit_status(signum))
