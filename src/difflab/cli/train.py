"""`python train.py [overrides]`: compose, instantiate, fit, and leave a complete run folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from difflab.callbacks.metrics import SampleMetrics
from difflab.lit.checkpoint import CheckpointNotFoundError
from difflab.utils.config import config_choices, instantiate_group

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train from a composed config. Returns the run folder, checkpoint paths and final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    resolved["choices"] = config_choices()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise CheckpointNotFoundError(f"cannot resume: checkpoint not found: {ckpt_path} (config key `ckpt_path`)")

    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    module.run_config = resolved
    callbacks = instantiate_group(cfg.get("callbacks"))
    metrics = instantiate(cfg.metrics, _convert_="all") if cfg.get("metrics") else None
    if metrics is not None and metrics.enabled:
        callbacks.append(SampleMetrics(metrics))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))
    for logger in loggers:
        if hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(resolved)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    if getattr(datamodule, "cond_stats", None) is not None:  # vector conditions: the z-scoring travels with the run
        (run_dir / "cond_stats.json").write_text(json.dumps(datamodule.cond_stats.to_dict(), indent=2))
    last = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(last)  # the final state, whatever the save interval
    best = next((cb.best_model_path for cb in callbacks if getattr(cb, "monitor", None) and getattr(cb, "best_model_path", "")), "")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("run folder: %s\nlast checkpoint: %s\nbest checkpoint: %s", run_dir, last, best or "-")
    for logger in loggers:
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()
    return {"run_dir": run_dir, "last_ckpt": last, "best_ckpt": best, "metrics": metrics, "global_step": trainer.global_step}
