"""The kill soaks: a tiny `python train.py` run is SIGKILLed at random steps (once in the middle of a checkpoint
write) and resumed each time, or stopped by SIGTERM / Ctrl-C at random steps and resumed with the command it prints;
either way it must end exactly where an uninterrupted run ends, with whole logs and no temp files."""

from __future__ import annotations

import csv
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_NET
from difflab.utils.checkpoint_files import temp_name_pattern
from difflab.utils.wandb_history import history_rows, run_logs

pytestmark = pytest.mark.slow

MAX_STEPS = 40
ARGS = ["debug=fast", *TINY_NET, f"trainer.max_steps={MAX_STEPS}", "trainer.limit_val_batches=0",
        "~callbacks.checkpoint_best", "callbacks.checkpoint_last.every_n_train_steps=2", "metrics=none",
        "callbacks.sample_grid.n=2", "data.batch_size=8", "logger=[csv,wandb]", "model.lr_scheduler.warmup_steps=3"]
KILLS = 5  # random SIGKILLs, after the one during a checkpoint write
STOPS = 5  # random SIGTERMs and SIGINTs (Ctrl-C), alternating
DETERMINISTIC = ("train/loss", "lr-AdamW", "epoch")


def _env(root: Path) -> dict[str, str]:
    """Each train.py starts its own W&B service, as a separate launch would: an inherited WANDB_SERVICE (the pytest
    process's, once an earlier test logged to W&B) would outlive each SIGKILL and hold the run id "in use"."""
    inherited = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**inherited, "WANDB_MODE": "offline", "DIFFLAB_ROOT": str(root), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def _start(run: Path, *extra: str) -> subprocess.Popen:
    resume = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"] if (run / "checkpoints" / "last.ckpt").is_file() else []
    cmd = [sys.executable, "train.py", *ARGS, f"hydra.run.dir={run}", *resume, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(run.parent), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _rows(run: Path) -> list[dict[str, str]]:
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _logged_step(run: Path) -> int:
    return max((int(r["step"]) for r in _rows(run) if r.get("train/loss")), default=-1)


def _kill_at(proc: subprocess.Popen, run: Path, step: int) -> bool:
    """SIGKILL the run once it has logged `step` (True), or let it finish first (False)."""
    while proc.poll() is None:
        if _logged_step(run) >= step:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    return False


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"]
    for k, v in a["ema"]["params"].items():
        assert torch.equal(v, b["ema"]["params"][k]), k
    for (i, sa), sb in zip(a["optimizer_states"][0]["state"].items(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa), i
    assert a["lr_schedulers"] == b["lr_schedulers"]


def _assert_same_run(straight: Path, resumed: Path) -> None:
    """The resumed run ends exactly like the uninterrupted one: state, no temp file, every step logged once."""
    _assert_same_state(_state(straight), _state(resumed))
    assert not list(resumed.rglob(temp_name_pattern()))
    csv_entries = _csv_entries(resumed)
    assert csv_entries == _csv_entries(straight) and max(csv_entries.values()) == 1
    assert {int(s) for s, k, _ in csv_entries if k == "train/loss"} == set(range(MAX_STEPS))
    wandb = _wandb_losses(resumed)
    assert wandb == _wandb_losses(straight) and max(wandb.values()) == 1 and len(wandb) == MAX_STEPS


def _csv_entries(run: Path) -> Counter:
    """(step, key, value) of every deterministic value in metrics.csv, counted."""
    return Counter((r["step"], k, r[k]) for r in _rows(run) for k in DETERMINISTIC if r.get(k))


def _wandb_losses(run: Path) -> Counter:
    run_id = (run / "wandb_id.txt").read_text().strip()
    return Counter((row["trainer/global_step"], row["train/loss"]) for log in run_logs(run / "wandb", run_id)
                   for row in history_rows(log) if "train/loss" in row)


def test_sigkills_at_random_steps_end_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, soaked = tmp_path / "straight" / "run", tmp_path / "soaked" / "run"
    proc = _start(straight)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    rng = random.Random(0)
    write_kill = rng.choice(range(4, 12, 2))  # a checkpoint step
    proc = _start(soaked, "+callbacks.die._target_=killswitch.KillDuringCheckpointWrite", f"+callbacks.die.step={write_kill}")
    assert proc.wait(timeout=600) == -signal.SIGKILL, proc.stderr.read()[-3000:]
    assert list(soaked.rglob(temp_name_pattern("last.ckpt")))  # the half-written temp file of the kill
    assert _state(soaked)["global_step"] == write_kill - 2  # the previous checkpoint survived whole
    kills, resumed_from = 1, []
    while kills < 1 + KILLS:
        resumed_from.append(_state(soaked)["global_step"])
        proc = _start(soaked)
        target = rng.randint(resumed_from[-1] + 1, min(resumed_from[-1] + 8, MAX_STEPS - 3))
        assert _kill_at(proc, soaked, target), proc.stderr.read()[-3000:]
        kills += 1
    resumed_from.append(_state(soaked)["global_step"])
    proc = _start(soaked)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    assert kills >= 6 and resumed_from == sorted(resumed_from)
    _assert_same_run(straight, soaked)


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int) -> None:
    while proc.poll() is None and _logged_step(run) < step:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read()[-3000:]


def test_sigterm_and_ctrl_c_save_the_step_print_the_resume_command_and_end_like_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight" / "run", tmp_path / "stopped" / "run"
    proc = _start(straight)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    rng, proc, done = random.Random(1), _start(stopped), 0
    for i in range(STOPS):
        sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
        target = rng.randint(done, min(done + 6, MAX_STEPS - 5))
        _wait_for_step(proc, stopped, target)
        os.kill(proc.pid, sig)
        status, err = proc.wait(timeout=600), proc.stderr.read()
        assert status == 128 + sig, err[-3000:]  # 143 for SIGTERM, 130 for Ctrl-C: never a success
        found = re.search(r"Stopped by (\w+) at step (\d+); the checkpoint of this step is (\S+)\. Resume with:\n  (.+)\n", err)
        assert found and found.group(1) == sig.name, err[-3000:]
        done = int(found.group(2))
        assert _state(stopped)["global_step"] == done > target  # the step in progress, not an older checkpoint
        assert Path(found.group(3)) == stopped / "checkpoints" / "last.ckpt"
        command = shlex.split(found.group(4))
        assert command[:2] == ["python", "train.py"] and command[-1] == f"ckpt_path={found.group(3)}"
        proc = subprocess.Popen([sys.executable, *command[1:]], cwd=REPO, env=_env(stopped.parent),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # the printed command
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    _assert_same_run(straight, stopped)
