"""Training and sampling end to end: run folder, resume after a kill, NaN guard, bad input, sample.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, compose_config
from difflab.callbacks.nan_guard import NonFiniteLossError
from difflab.cli import sample, train
from difflab.data import DataNotFoundError
from difflab.errors import ConfigError
from difflab.lit.checkpoint import CheckpointMismatchError, CheckpointNotFoundError
from killswitch import SimulatedKill

SHORT = ["trainer.max_steps=12", "trainer.val_check_interval=4", "callbacks.checkpoint_last.every_n_train_steps=4",
         "data.batch_size=32", "model.lr_scheduler.warmup_steps=3", "sampler.steps=5",
         "callbacks.sample_grid.n=4", "callbacks.sample_grid.every_n_steps=0"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short digits run shared by the tests that only read its outputs."""
    root = tmp_path_factory.mktemp("trained")
    from conftest import TINY_NET

    cfg = compose_config("train", ["logger=csv", *TINY_NET, *SHORT, "callbacks.sample_grid.every_n_steps=8", "trainer.max_steps=16"], root)
    return train.run(cfg)


def test_run_folder_holds_config_checkpoints_grids_and_logs(trained):
    run_dir = trained["run_dir"]
    assert trained["global_step"] == 16
    for rel in ("config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "samples/step_0000008.png",
                "samples/final.png", "csv/metrics.csv"):
        assert (run_dir / rel).is_file(), rel
    assert not (run_dir / "samples" / "step_0000016.png").exists()  # the last step's grid is final.png
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 16
    assert ckpt["config"]["model"]["net"]["base_channels"] == 8  # the resolved config travels with the weights
    assert set(ckpt["ema"]["params"]) == {n for n, _ in ckpt["state_dict"].items()}
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"][0]["last_epoch"] == 16
    ema = ckpt["ema"]["params"]
    assert any(not torch.equal(ema[k], ckpt["state_dict"][k]) for k in ema)  # EMA differs from raw weights
    assert "val/loss" in (run_dir / "csv" / "metrics.csv").read_text()


# digits: 1,617 training images; batch 128 with drop_last gives 12 steps per epoch
EPOCH_SHORT = [o for o in SHORT if not o.startswith(("trainer.max_steps", "data.batch_size"))] + [
    "trainer.max_steps=16", "data.batch_size=128"]


def _kill_and_resume(tmp_path, overrides, kill_step):
    """Run with a simulated kill at `kill_step`, then resume from last.ckpt; returns both final checkpoints."""
    straight = train.run(compose_config("train", ["logger=csv", *_tiny(), *overrides], tmp_path / "straight"))
    killed_cfg = compose_config("train", ["logger=csv", *_tiny(), *overrides, "+callbacks.kill._target_=killswitch.KillAt",
                                          f"+callbacks.kill.step={kill_step}"], tmp_path / "killed")
    with pytest.raises(SimulatedKill):
        train.run(killed_cfg)
    last = tmp_path / "killed" / "run" / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == kill_step
    resumed = train.run(compose_config("train", ["logger=csv", *_tiny(), *overrides, f"ckpt_path={last}"],
                                       tmp_path / "resumed"))
    return load(straight["last_ckpt"]), load(resumed["last_ckpt"])


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_resume_at_an_epoch_boundary_reproduces_the_uninterrupted_run(tmp_path):
    a, b = _kill_and_resume(tmp_path, EPOCH_SHORT, kill_step=12)
    assert b["global_step"] == a["global_step"] == 16
    assert b["lr_schedulers"] == a["lr_schedulers"]
    assert b["ema"]["num_updates"] == a["ema"]["num_updates"] == 16
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b["ema"]["params"][k], a["ema"]["params"][k], rtol=1e-5, atol=1e-6)
    exp_a = a["optimizer_states"][0]["state"][0]["exp_avg_sq"]
    torch.testing.assert_close(b["optimizer_states"][0]["state"][0]["exp_avg_sq"], exp_a, rtol=1e-5, atol=1e-9)


def test_resume_mid_epoch_keeps_step_optimizer_schedule_and_ema(tmp_path):
    """Mid-epoch, the loader goes on with the epoch's untrained batches (same order, same per-step noise)."""
    a, b = _kill_and_resume(tmp_path, SHORT, kill_step=8)
    assert b["global_step"] == a["global_step"] == 12
    assert b["lr_schedulers"] == a["lr_schedulers"]
    assert b["ema"]["num_updates"] == a["ema"]["num_updates"] == 12
    assert b["optimizer_states"][0]["state"][0]["step"] == a["optimizer_states"][0]["state"][0]["step"]
    for k in a["state_dict"]:  # the uninterrupted trajectory
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b["ema"]["params"][k], a["ema"]["params"][k], rtol=1e-5, atol=1e-6)


def _tiny() -> list[str]:
    from conftest import TINY_NET

    return TINY_NET


def test_nan_loss_stops_the_run_before_any_bad_checkpoint(tmp_path):
    cfg = compose_config("train", ["logger=csv", *_tiny(), *SHORT, "callbacks.nan_guard.check_every_n_steps=100",
                                   "+callbacks.poison._target_=killswitch.PoisonAt", "+callbacks.poison.step=6"], tmp_path)
    with pytest.raises(NonFiniteLossError, match="(?s)non-finite training loss.*last.ckpt"):
        train.run(cfg)
    ckpt = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_a_diverged_run_writes_no_sample_grid(tmp_path):
    """Weights poisoned before step 6: the grid due after that step is refused (it would be all black)."""
    cfg = compose_config("train", ["logger=csv", *_tiny(), *SHORT, "callbacks.nan_guard.check_every_n_steps=100",
                                   "callbacks.sample_grid.every_n_steps=1", "metrics=none",
                                   "+callbacks.poison._target_=killswitch.PoisonAt", "+callbacks.poison.step=6"], tmp_path)
    with pytest.raises(NonFiniteLossError, match="non-finite (training loss|weights) .*step 7.*no sample grid"):
        train.run(cfg)
    grids = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png"))
    assert grids == [f"step_{s:07d}.png" for s in range(1, 7)]


def test_bad_inputs_give_one_clear_error(train_cfg, trained, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"nowhere.*data\.root"):  # each attempt its own run folder
        train.run(train_cfg("data=mnist", f"data.root={tmp_path / 'nowhere'}", f"paths.run_dir={tmp_path / 'r1'}"))
    with pytest.raises(ConfigError, match="unknown sampler 'dpm_9000'. Known samplers: ddim, ddpm"):
        train.run(train_cfg("sampler.name=dpm_9000", f"paths.run_dir={tmp_path / 'r2'}"))
    with pytest.raises(CheckpointNotFoundError, match="ckpt_path"):
        train.run(train_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}", f"paths.run_dir={tmp_path / 'r3'}"))
    other_net = train_cfg("model.net.base_channels=16", f"ckpt_path={trained['last_ckpt']}", f"paths.run_dir={tmp_path / 'r4'}")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)different network.*model\.net\.base_channels: 8 \(checkpoint\) vs 16"):
        train.run(other_net)


def test_sample_cli_same_seed_same_images_whatever_the_batch_size(trained, tmp_path):
    def run(batch_size: int, seed: int, out: str):
        cfg = compose_config("sample", [f"ckpt={trained['last_ckpt']}", "sampler=ddim", "sampler.steps=4", "n=5",
                                        f"seed={seed}", f"batch_size={batch_size}", f"out_dir={tmp_path / out}"], tmp_path)
        return sample.run(cfg)

    a, b, c = run(5, 0, "a"), run(2, 0, "b"), run(5, 1, "c")
    # identical noise per image; the network's batched arithmetic may round differently (float tolerance)
    torch.testing.assert_close(a["images"], b["images"], rtol=0, atol=1e-4)
    assert (a["images"] - c["images"]).abs().mean() > 0.05
    assert a["nfe"] == 4
    assert len(list((tmp_path / "a" / "images").glob("*.png"))) == 5 and (tmp_path / "a" / "grid.png").is_file()
    assert '"name": "ddim"' in (tmp_path / "a" / "samples.json").read_text()
    karras = sample.run(compose_config("sample", [f"ckpt={trained['last_ckpt']}", "sampler=dpmpp_2m", "sampler.steps=4",
                                                  "scheduler.grid=karras", "n=5", f"out_dir={tmp_path / 'k'}"], tmp_path))
    assert "grid='karras'" in (tmp_path / "k" / "samples.json").read_text() and karras["nfe"] == 4
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found"):
        sample.run(compose_config("sample", [f"ckpt={tmp_path / 'nope.ckpt'}"], tmp_path))


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_root_scripts_train_and_sample_in_a_subprocess(tmp_path):
    """The README commands, shrunk: `python train.py ...` then `python sample.py ckpt=...`."""
    env = {**os.environ, "WANDB_MODE": "offline", "DIFFLAB_ROOT": str(tmp_path)}
    cmd = [sys.executable, "train.py", "debug=fast", *_tiny()]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = next(tmp_path.glob("runs/train/*/checkpoints/last.ckpt"))
    assert list(tmp_path.glob("runs/train/*/wandb/offline-run-*")), "W&B offline run missing"
    cmd = [sys.executable, "sample.py", f"ckpt={ckpt}", "sampler=ddim", "sampler.steps=3", "n=4", "seed=0"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert next(tmp_path.glob("runs/sample/*/grid.png")).is_file()


def test_ema_updates_once_per_optimizer_step_under_gradient_accumulation(train_cfg):
    out = train.run(train_cfg("trainer.max_steps=3", "trainer.accumulate_grad_batches=2", debug="fast"))
    assert load(out["last_ckpt"])["ema"]["num_updates"] == 3
