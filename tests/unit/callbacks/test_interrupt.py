"""SIGTERM and Ctrl-C in training: a checkpoint of the step in progress, the resume command, exit 143 / 130; a second
signal stops at once; the signal handlers before training are back after it. (The resumed run's exactness is the
e2e soak's: tests/e2e/test_kill_soak.py.)"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from conftest import TINY_NET, compose_config
from difflab.api.training import run
from difflab.callbacks.interrupt import exit_status, resume_command
from killswitch import SimulatedKill

QUICK = ["debug=fast", "logger=csv", "metrics=none", "trainer.enable_progress_bar=false", "trainer.max_steps=12",
         "trainer.limit_val_batches=0", "~callbacks.checkpoint_best", *TINY_NET]


def _signalled(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = compose_config("train", [*QUICK, "+callbacks.signal._target_=killswitch.SignalAt", *extra], tmp_path)
    with pytest.raises(SystemExit) as caught:
        run(cfg)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    return caught.value.code, tmp_path / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("name,status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_the_step_in_progress_and_exits_128_plus_its_number(tmp_path: Path, capsys, name: str,
                                                                            status: int) -> None:
    code, last = _signalled(tmp_path, "+callbacks.signal.step=4", f"+callbacks.signal.signal={name}")
    assert code == status == exit_status(getattr(signal, name))
    assert torch.load(last, weights_only=True)["global_step"] == 5  # the step it was in finished, then it stopped
    err = capsys.readouterr().err
    assert f"{name} received: the run stops at the end of this step" in err
    assert f"Stopped by {name} at step 5; the checkpoint of this step is {last}. Resume with:\n  " in err
    assert f"ckpt_path={last}" in err.splitlines()[-1]


@pytest.mark.slow
def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path: Path, capsys) -> None:
    code, last = _signalled(tmp_path, "+callbacks.signal.step=3", "+callbacks.signal.times=2")
    assert code == 143 and torch.load(last, weights_only=True)["global_step"] == 3  # the previous step's, whole
    assert "SIGTERM again: stopping at once, without a checkpoint." in capsys.readouterr().err


@pytest.mark.slow
def test_a_resumed_run_keeps_writing_last_ckpt_so_a_second_kill_resumes_from_its_newest_step(tmp_path: Path) -> None:
    """Stopped by SIGTERM before any periodic checkpoint (the stop's last.ckpt is the only one), then resumed in the
    same folder: the resumed run's periodic "last" checkpoints must go on replacing last.ckpt (not last-v1.ckpt, which
    no resume looks for), so that a hard kill after them resumes from the newest one."""
    code, last = _signalled(tmp_path, "+callbacks.signal.step=2", "callbacks.checkpoint_last.every_n_train_steps=100")
    assert code == 143 and torch.load(last, weights_only=True)["global_step"] == 3
    resumed = compose_config("train", [*QUICK, "callbacks.checkpoint_last.every_n_train_steps=3",
                                       "+callbacks.kill._target_=killswitch.KillAt", "+callbacks.kill.step=10",
                                       f"ckpt_path={last}"], tmp_path)
    with pytest.raises(SimulatedKill):
        run(resumed)
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(last, weights_only=True)["global_step"] == 9  # the resumed run's newest periodic checkpoint


def test_the_resume_command_repeats_the_overrides_and_names_the_checkpoint_and_the_folder() -> None:
    argv = ["train.py", "model=ddim", "model.net.channel_mult=[1,2]", "ckpt_path=/old.ckpt", "data.name=my data"]
    assert resume_command("/runs/a", "/runs/a/checkpoints/last.ckpt", argv) == (
        "python train.py model=ddim 'model.net.channel_mult=[1,2]' 'data.name=my data' hydra.run.dir=/runs/a "
        "ckpt_path=/runs/a/checkpoints/last.ckpt")
    assert resume_command("/x", "/x/last.ckpt", ["/usr/bin/difflab-train", "paths.run_dir=/x"]) == (
        "difflab-train paths.run_dir=/x ckpt_path=/x/last.ckpt")  # paths.run_dir names the folder already
