"""Scaling out on CPU: 2 DDP processes (gloo) train like 1 at the same global batch; bf16/fp16 stay finite and the
fp16 loss scaler skips an overflowing step; the sampler's arithmetic stays float32 under autocast."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision

from conftest import REPO, TINY_NET
from difflab.cli import train
from difflab.data import DigitsDataModule
from difflab.data.base import GlobalBatchSampler
from difflab.samplers.generate import generate

RUN = ["trainer.max_steps=3", "data.batch_size=8", "metrics=none", "callbacks.sample_grid.n=2",
       "+callbacks.dump._target_=probes.DumpRankState"]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _losses(run_dir: Path) -> list[float]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_global_batch_sampler_shards_the_batches_of_one_process() -> None:
    data = list(range(21))
    one = list(GlobalBatchSampler(data, 4, seed=3))
    ranks = [list(GlobalBatchSampler(data, 4, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert len(one) == 20 and sorted(one) == sorted(set(one))  # 5 full batches, the short one dropped
    for b in range(5):  # rank 0 holds the first half of each global batch, rank 1 the second
        assert ranks[0][2 * b: 2 * b + 2] + ranks[1][2 * b: 2 * b + 2] == one[4 * b: 4 * b + 4]
    sampler = GlobalBatchSampler(data, 4, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != one  # a new order each epoch
    with pytest.raises(ValueError, match=r"data\.batch_size.*divisible by the 3 processes"):
        GlobalBatchSampler(data, 4, num_replicas=3, rank=0)


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_two_ddp_processes_train_like_one_at_the_same_global_batch(train_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    one = train.run(train_cfg(*RUN))["run_dir"]
    two = tmp_path / "ddp"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "train.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "debug=fast",
           "logger=csv", *TINY_NET, *RUN, f"hydra.run.dir={two}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = _load(one / "checkpoints" / "last.ckpt"), _load(two / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 3 and a["train_images_seen"] == b["train_images_seen"] == 24
    for k in a["state_dict"]:  # same batches, same noise, gradients averaged over ranks: float tolerance
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b["ema"]["params"][k], a["ema"]["params"][k], rtol=1e-5, atol=1e-6)
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)  # train/loss: the mean over both ranks
    ranks = [_load(two / f"rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(ranks[0]["ema"][k], ranks[1]["ema"][k]) for k in ranks[0]["ema"])  # EMA on every rank
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # written once


class _Overflow(L.Callback):
    """At step 1 puts an inf in one gradient: the fp16 scaler must skip that step and lower its scale."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.before = [p.detach().clone() for p in pl_module.parameters()]
        self.scale_before = trainer.precision_plugin.scaler.get_scale()

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 1:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        changed = any(not torch.equal(p, q) for p, q in zip(pl_module.parameters(), self.before))
        scale = trainer.precision_plugin.scaler.get_scale()
        if trainer.global_step == 2:  # the overflowing step just ended
            self.skipped = not changed and scale == self.scale_before / 2
        elif trainer.global_step == 1:
            self.first_step_applied = changed


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_steps_stay_finite_and_fp16_skips_an_overflow(precision: str, train_cfg) -> None:  # noqa: ANN001
    cfg = train_cfg(f"trainer.precision={precision}", "data.batch_size=8")
    L.seed_everything(0)
    module = instantiate(cfg.model)
    assert module.configure_optimizers().__class__.__name__ in ("dict", "AdamW")
    # Lightning turns 16-mixed into bf16 on CPU; the plugin below is what a GPU run gets (fp16 + GradScaler)
    plugin = MixedPrecision(precision, "cpu") if precision == "16-mixed" else None
    probe = _Overflow() if plugin else None
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[probe] if probe else [],
                        plugins=[plugin] if plugin else None, precision=None if plugin else precision)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=8))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    if probe is not None:
        assert probe.first_step_applied and probe.skipped


def test_sampler_arithmetic_stays_float32_under_autocast(train_cfg) -> None:  # noqa: ANN001
    module = instantiate(train_cfg("sampler=ddim", "sampler.steps=4").model)
    dtypes: list[torch.dtype] = []

    def run(callback=None):  # noqa: ANN001, ANN202
        return generate(module.denoiser, module.scheduler, module.sampling_spec(), n=2, shape=module.image_shape, seed=0,
                        callback=callback)[0]

    full = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = run(lambda info: dtypes.append(info["x"].dtype))
    assert half.dtype == torch.float32 and dtypes and set(dtypes) == {torch.float32}
    assert (half - full).abs().max() < 0.1  # the net ran in bf16, the steps in float32


def test_wandb_run_id_is_kept_in_the_run_folder_and_follows_a_resume(tmp_path: Path) -> None:
    from difflab.utils.loggers import wandb_run_id

    first = tmp_path / "first"
    (first / "checkpoints").mkdir(parents=True)
    run_id = wandb_run_id(first)
    assert re.fullmatch(r"[a-z0-9]{8}", run_id) and (first / "wandb_id.txt").read_text().strip() == run_id
    assert wandb_run_id(first) == run_id  # a requeued job in the same folder
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    assert wandb_run_id(resumed, resume_from=str(first / "checkpoints" / "last.ckpt")) == run_id  # ckpt_path=...
    assert (resumed / "wandb_id.txt").read_text().strip() == run_id
    assert wandb_run_id(tmp_path / "first" / "checkpoints") != run_id  # another folder, another run
