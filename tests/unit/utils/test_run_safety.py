"""Run folders, checkpoints as data, atomic writes, and W&B without network (fast; the kill soak is test_kill_soak.py)."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONF, REPO, TINY_NET, compose_config
from difflab.cli import train
from difflab.cli.hydra_callbacks import ClaimRunFolder
from difflab.errors import CorruptFileError, IncompatibleCheckpointError, UnwritableOutputError
from difflab.lit.checkpoint import load_module
from difflab.utils import checkpoint_files, run_folders
from difflab.utils.checkpoint_files import atomic_save, temp_name_pattern
from difflab.utils.cluster import resume_path


def _hydra_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True)


def test_two_launches_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    stamps = iter(["2026-01-01_00-00-00.000000_aaaa"] * 2 + ["2026-01-01_00-00-00.000000_bbbb"] +
                  ["2026-01-01_00-00-00.000000_cccc"] * 2 + ["2026-01-01_00-00-00.000000_dddd"])
    monkeypatch.setattr("difflab.utils.config.run_stamp", lambda: next(stamps))  # force the worst case: one name
    from difflab.utils.config import register_resolvers

    register_resolvers()
    first, second = _hydra_cfg(tmp_path), _hydra_cfg(tmp_path)
    ClaimRunFolder().on_run_start(first)
    ClaimRunFolder().on_run_start(second)  # its name exists: drawn again, created exclusively
    assert first.hydra.run.dir != second.hydra.run.dir
    assert sorted(p.name for p in (tmp_path / "runs" / "train").iterdir()) == [
        "2026-01-01_00-00-00.000000_aaaa", "2026-01-01_00-00-00.000000_bbbb"]
    sweeps = _hydra_cfg(tmp_path), _hydra_cfg(tmp_path)  # `-m` sweeps: the sweep folder likewise
    for sweep in sweeps:
        ClaimRunFolder().on_multirun_start(sweep)
    assert sorted(p.name for p in (tmp_path / "runs" / "train" / "multirun").iterdir()) == [
        "2026-01-01_00-00-00.000000_cccc", "2026-01-01_00-00-00.000000_dddd"]
    monkeypatch.undo()
    register_resolvers()
    a, b = run_folders.run_stamp(), run_folders.run_stamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{6}_[a-z0-9]{4}", a) and a != b


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_a_new_run_into_an_existing_run_folder_exits_2_and_changes_nothing(tmp_path):
    run = tmp_path / "old_run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    for rel, text in (("config.yaml", "seed: 1\n"), (".hydra/config.yaml", "x: 1\n"), ("checkpoints/last.ckpt", "w")):
        (run / rel).write_text(text)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    env = {**os.environ, "WANDB_MODE": "offline", "DIFFLAB_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, "train.py", "debug=fast", "seed=3", f"hydra.run.dir={run}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert str(run) in done.stderr and f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in done.stderr
    with pytest.raises(UnwritableOutputError, match="already holds a run"):  # paths.run_dir=, in-process
        train.run(compose_config("train", ["debug=fast", "seed=3", f"paths.run_dir={run}"], tmp_path))
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_an_existing_run_folder_is_resumed_only_when_asked(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    run_folders.check_run_folder(run)  # empty: fine
    (run / "train.log").write_text("")
    run_folders.check_run_folder(run)  # only what Hydra writes first: fine
    (run / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(UnwritableOutputError, match="ckpt_path="):
        run_folders.check_run_folder(run)
    with pytest.raises(UnwritableOutputError):
        run_folders.check_run_folder(run, str(tmp_path / "elsewhere" / "last.ckpt"))
    run_folders.check_run_folder(run, str(run / "checkpoints" / "last.ckpt"))  # explicit resume
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_folders.check_run_folder(run)  # a requeued SLURM job comes back to its folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A real difflab checkpoint of a one-step run."""
    root = tmp_path_factory.mktemp("ckpt")
    return train.run(compose_config("train", ["debug=fast", "logger=csv", "metrics=none", *TINY_NET], root))["last_ckpt"]


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_its_payload_never_runs(ckpt, tmp_path):
    marker = tmp_path / "payload_ran"
    blob = torch.load(ckpt, weights_only=True)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({**blob, "extra": Payload(marker)}, pickled)
    for load in (lambda p: load_module(p),
                 lambda p: train.run(compose_config("train", ["debug=fast", "logger=csv", *TINY_NET, f"ckpt_path={p}"], tmp_path))):
        with pytest.raises(IncompatibleCheckpointError, match=r"(?s)pickled.ckpt.*system"):
            load(pickled)
    targeted = tmp_path / "target.ckpt"
    blob["config"]["model"]["net"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    torch.save(blob, targeted)
    with pytest.raises(IncompatibleCheckpointError, match=r"target.ckpt.*`_target_: os.system` at model.net"):
        load_module(targeted)
    assert not marker.exists()


def test_empty_truncated_or_foreign_files_are_corrupt_files_named(ckpt, tmp_path):
    data = ckpt.read_bytes()
    files = {"empty.ckpt": b"", "truncated.ckpt": data[: len(data) // 2], "image.png": b"\x89PNG\r\n\x1a\n" + data[:100]}
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CorruptFileError, match=rf"Cannot read '{path}'.*config key `ckpt`"):
            load_module(path)
        run_dir = tmp_path / f"run_{name}"
        with pytest.raises(CorruptFileError, match=rf"Cannot read '{path}'.*config key `ckpt_path`"):
            train.run(compose_config("train", ["debug=fast", "logger=csv", *TINY_NET, f"ckpt_path={path}",
                                               f"paths.run_dir={run_dir}"], tmp_path))


def test_a_corrupt_last_ckpt_falls_back_to_the_newest_loadable_one(ckpt, tmp_path, caplog):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "best.ckpt").write_bytes(ckpt.read_bytes())
    (folder / "last.ckpt").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert resume_path(tmp_path / "run", str(folder / "last.ckpt")) == str(folder / "best.ckpt")
        assert resume_path(tmp_path / "run", None) == str(folder / "best.ckpt")  # a requeue
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("last.ckpt" in w and "best.ckpt" in w for w in warnings)
    (folder / "best.ckpt").write_bytes(b"junk")
    with pytest.raises(CorruptFileError, match="last.ckpt"):
        resume_path(tmp_path / "run", str(folder / "last.ckpt"))


def test_an_interrupted_write_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_save({"step": torch.tensor(1)}, target)

    def interrupted(obj, file):
        file.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt  # stands in for any failure mid-write

    monkeypatch.setattr(checkpoint_files, "_serialize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": torch.tensor(2)}, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert not list(tmp_path.glob(temp_name_pattern()))
    (tmp_path / temp_name_pattern("last.ckpt").replace("*", "x1")).write_bytes(b"left by a kill")
    assert [p.name for p in checkpoint_files.clean_temp_files(tmp_path)] == [".last.ckpt.x1.tmp"]


def test_wandb_with_a_key_and_no_network_goes_offline_quickly_with_one_warning(tmp_path, monkeypatch, caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    from difflab.utils.loggers import wandb_logger

    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        logger = wandb_logger(save_dir=str(tmp_path), mode="auto")
        logger.log_metrics({"train/loss": 1.0}, step=0)
        logger.experiment.finish()
    assert time.monotonic() - start < 15
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "W&B" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and "offline" in warnings[0]
    assert list((tmp_path / "wandb").glob("offline-run-*"))
