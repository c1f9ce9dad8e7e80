"""Metrics inside training: the same values for 1 and 2 processes (ddp_spawn), logging, metrics.json, skipping."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

from difflab.callbacks import SampleMetrics
from difflab.cli import train
from difflab.data import DigitsDataModule
from difflab.evaluation import MetricsConfig
from fakes import tiny_networks


def _fit(train_cfg, root: Path, devices: int) -> dict:  # noqa: ANN001
    cfg = train_cfg("sampler=ddim", "sampler.steps=3", "model.optimizer.lr=0.0")  # lr 0: both runs keep the init
    L.seed_everything(0)
    module = instantiate(cfg.model)
    config = MetricsConfig(every_n_steps=0, n_samples=10, batch_size=3, reference={"split": "train", "n": 24},
                           kid_subset_size=5, isc_splits=2, feature_batch_size=4, clip_score=False,
                           cache_dir=str(root / "stats"))
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        default_root_dir=str(root), callbacks=[SampleMetrics(config, networks=tiny_networks())])
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=4))
    record = json.loads((root / "metrics.json").read_text())
    return {**record["values"], "logged": {k: float(v) for k, v in trainer.callback_metrics.items()}}


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_two_processes_give_the_values_of_one(train_cfg, tmp_path: Path) -> None:
    one = _fit(train_cfg, tmp_path / "one", 1)
    two = _fit(train_cfg, tmp_path / "two", 2)
    for key in ("fid", "kid", "kid_std", "is", "is_std", "lpips_diversity"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    assert one["nfe"] == two["nfe"] == 3
    assert one["fid"] > 0 and one["lpips_diversity"] > 0
    # the reference statistics were computed sharded over both ranks and cached under the same name
    assert [p.name for p in (tmp_path / "two" / "stats").iterdir()] == ["digits-train-16px-n24-inception-tiny0000.pt"]
    assert two["logged"]["val/fid"] == pytest.approx(two["fid"])


def test_default_run_without_weights_warns_once_logs_perf_and_writes_metrics_json(train_cfg, caplog) -> None:  # noqa: ANN001
    cfg = train_cfg("trainer.max_steps=3", "metrics.batch_size=4")
    with caplog.at_level(logging.WARNING):
        out = train.run(cfg)
    skipped = [r for r in caplog.records if "metrics skipped" in r.getMessage()]
    assert len(skipped) == 1 and "fid" in skipped[0].getMessage()
    record = json.loads((out["run_dir"] / "metrics.json").read_text())
    assert record["variant"] == "ddpm" or record["variant"] == "DiffusionModule"
    assert record["values"]["nfe"] == 2 and record["values"]["samples_per_sec"] > 0
    assert record["n_samples"] == cfg.metrics.n_samples  # the broken-sample rate needs no weights
    assert 0.0 <= record["values"]["broken_rate"] <= 1.0
    assert record["protocol"]["broken_thresholds"]["split"] == "val"
    assert record["train_images_seen"] == 3 * 4 and record["global_step"] == 3
    assert set(record["protocol"]["skipped"]) == {"fid", "kid", "inception_score", "lpips_diversity"}
    rows = list(csv.DictReader((out["run_dir"] / "csv" / "metrics.csv").open()))
    columns = set(rows[0])
    assert {"perf/samples_per_sec", "perf/nfe", "perf/train_images_per_sec", "val/broken_rate"} <= columns
    assert any(r["perf/train_images_per_sec"] for r in rows)
