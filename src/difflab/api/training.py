"""A training run from a composed config: instantiate data, model, callbacks, loggers and Trainer, fit, and leave a
complete run folder (what `python train.py` and `difflab.train` run)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from omegaconf import DictConfig, OmegaConf

from difflab.api import checks
from difflab.api.config import compose
from difflab.api.models import load
from difflab.callbacks.metrics import SampleMetrics
from difflab.callbacks.reconstruction import ReconstructionMetrics
from difflab.errors import ConfigError
from difflab.lit.checkpoint import CheckpointNotFoundError
from difflab.lit.latent import cached_train_set
from difflab.nets.autoencoder import LatentAutoencoder
from difflab.utils.checkpoint_files import (
    AtomicCheckpointIO,
    clean_temp_files,
    load_checkpoint_file,
)
from difflab.utils.cluster import is_rank_zero, resume_path
from difflab.utils.config import config_choices, instantiate_group
from difflab.utils.files import write_json, write_text
from difflab.utils.loggers import task_loggers
from difflab.utils.run_folders import check_run_folder
from difflab.utils.wandb_artifacts import log_checkpoints, wandb_loggers

log = logging.getLogger(__name__)


def needs_first_stage(cfg: DictConfig) -> bool:
    """A latent model whose difflab autoencoder has no checkpoint yet (`model.autoencoder.ckpt=null`)."""
    ae = cfg.model.get("autoencoder")
    return ae is not None and "stage1" in ae and not ae.get("ckpt")


def train_first_stage(cfg: DictConfig) -> DictConfig:
    """Stage 1 of `model=ldm` without a checkpoint: train `model.autoencoder.stage1` for `stage1_steps` in
    <run>/stage1 (its own checkpoints, metrics and logs), then return the config with `ckpt` set to it.
    Resuming (`ckpt_path`) reuses the first stage of the interrupted run instead."""
    if cfg.get("ckpt_path") and Path(cfg.ckpt_path).is_file():
        cfg = copy.deepcopy(cfg)
        saved = load_checkpoint_file(cfg.ckpt_path, key="ckpt_path", mmap=True).get("config") or {}
        cfg.model.autoencoder.ckpt = ((saved.get("model") or {}).get("autoencoder") or {}).get("ckpt")
        return cfg
    stage1 = copy.deepcopy(cfg)
    stage1.trainer.max_steps = int(cfg.model.autoencoder.stage1_steps)
    stage1.model = OmegaConf.create(OmegaConf.to_container(stage1.model.autoencoder.stage1, resolve=True))
    stage1.paths.run_dir = str(Path(cfg.paths.run_dir) / "stage1")
    stage1.task_name = "stage1"
    stage1.ckpt_path = None
    if "cache_latents" in stage1.data:
        stage1.data.cache_latents = False  # stage 1 trains on images
    log.info("stage 1: training the autoencoder in %s (%d steps)", stage1.paths.run_dir, stage1.trainer.max_steps)
    out = run(stage1)
    cfg = copy.deepcopy(cfg)
    cfg.model.autoencoder.ckpt = str(out["last_ckpt"])
    log.info("stage 2: latent diffusion on the stage-1 autoencoder %s", out["last_ckpt"])
    return cfg


def shared(model: DictConfig, built: dict[str, Any]) -> dict[str, Any]:
    """The objects the checks built (sampler spec, scheduler) that the model config takes as they are (`sampler:
    ${sampler}`), so a run resolves each once."""
    return {key: value for key, value in built.items()
            if key in model and OmegaConf.is_interpolation(model, key) and model._get_node(key)._value() == f"${{{key}}}"}


def build_model(model: DictConfig, given: dict[str, Any]) -> Any:
    """`instantiate(model)` with the `given` objects in place of their config keys (passed as they are: Hydra would
    turn a dataclass such as `SamplerSpec` back into a config)."""
    if not given:
        return instantiate(model)
    name = model._key() or "model"  # kept as the node's parent key, so errors name `model.net.x`, not `net.x`
    root = OmegaConf.create({name: OmegaConf.to_container(model, resolve=True)})
    for key in given:
        del root[name][key]
    return instantiate(root[name], _partial_=True)(**given)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train from a composed config. Returns the run folder, checkpoint paths and final metrics."""
    if is_rank_zero():  # before anything is written: a run folder belongs to one run
        check_run_folder(cfg.paths.run_dir, cfg.get("ckpt_path"))
    built = checks.train_config(cfg)  # every value that can be checked before data, model and trainer are built
    if needs_first_stage(cfg):
        cfg = train_first_stage(cfg)
    stage1 = OmegaConf.select(cfg, "model.autoencoder.ckpt", default=None)
    if isinstance(stage1, str) and stage1 and not Path(stage1).is_absolute():  # the checkpoint names it from anywhere
        cfg.model.autoencoder.ckpt = str(Path(stage1).resolve())
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        for stale in clean_temp_files(run_dir):
            log.info("removed %s, left by a checkpoint write that was interrupted", stale)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    resolved["choices"] = config_choices()

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise CheckpointNotFoundError(f"cannot resume: checkpoint not found: {ckpt_path} (config key `ckpt_path`)")
    ckpt_path = resume_path(run_dir, ckpt_path)  # a requeued job continues from its own run folder

    datamodule = instantiate(cfg.data)
    module = build_model(cfg.model, shared(cfg.model, built))
    module.run_config = resolved
    if getattr(datamodule, "cache_latents", False):  # data.cache_latents=true: stage 2 trains from encoded latents
        if not isinstance(getattr(module, "autoencoder", None), LatentAutoencoder):  # pixel models: the identity
            raise ConfigError.bad_value("data.cache_latents", "true needs a latent model", "Use model=ldm, or leave it false.")
        cache_dir = Path(cfg.paths.data_dir) / "latent_cache"
        datamodule.train_set_override = partial(cached_train_set, datamodule, module.autoencoder, cache_dir)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # trainer.enable_progress_bar=false: no progress display
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    metrics = instantiate(cfg.metrics, _convert_="all") if cfg.get("metrics") else None
    if metrics is not None and metrics.enabled:
        if not hasattr(module, "generate"):  # e.g. model=regressor: scored by its own validation
            raise ConfigError.bad_value("metrics", f"metrics.n_samples={metrics.n_samples} samples images, and "
                                        f"{type(module).__name__} generates none (its validation logs its scores)",
                                        "Pass metrics=none (model=regressor's default).")
        callbacks.append(ReconstructionMetrics(metrics) if hasattr(module, "reconstruct") else SampleMetrics(metrics))
    with task_loggers(cfg.get("logger")) as loggers:  # ended whatever happens: the one place loggers close
        return _fit(cfg, resolved, run_dir, ckpt_path, datamodule, module, callbacks, loggers)


def _fit(cfg: DictConfig, resolved: dict[str, Any], run_dir: Path, ckpt_path: str | None, datamodule: Any,
         module: Any, callbacks: list[Any], loggers: list[Any]) -> dict[str, Any]:
    """Build the Trainer, write the run's config, fit (resuming from `ckpt_path`), save the final checkpoint."""
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir),
                                     plugins=[AtomicCheckpointIO()])
    if is_rank_zero():  # under DDP every process runs this function; one writes
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved), key="paths.run_dir", overwrite=True)
    resumed_step = int(load_checkpoint_file(ckpt_path, key="ckpt_path", mmap=True)["global_step"]) if ckpt_path else 0
    for logger in loggers:
        if ckpt_path and hasattr(logger, "resume_at_step"):
            logger.resume_at_step(resumed_step)  # logs continue with each step once
        if hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(resolved)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    if getattr(datamodule, "cond_stats", None) is not None:  # vector conditions: the z-scoring travels with the run
        write_json(run_dir / "cond_stats.json", datamodule.cond_stats.to_dict(), key="paths.run_dir")
    last = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(last)  # the final state, whatever the save interval (atomically, AtomicCheckpointIO)
    best = next((cb.best_model_path for cb in callbacks if getattr(cb, "monitor", None) and getattr(cb, "best_model_path", "")), "")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("run folder: %s\nlast checkpoint: %s\nbest checkpoint: %s", run_dir, last, best or "-")
    for logger in wandb_loggers(loggers) if is_rank_zero() else ():
        if getattr(logger, "log_model_artifacts", False):  # logger.wandb.log_model
            log_checkpoints(logger, last, best, {"global_step": trainer.global_step, **metrics})
    return {"run_dir": run_dir, "last_ckpt": last, "best_ckpt": best, "metrics": metrics, "global_step": trainer.global_step}


@dataclass
class TrainResult:
    """A finished training run: its folder, checkpoints, final metrics and step."""

    run_dir: Path
    last_ckpt: Path
    best_ckpt: str
    metrics: dict[str, float]
    global_step: int

    def load(self, **kwargs: Any) -> Any:
        """The trained model (`difflab.load` of the last checkpoint)."""
        return load(self.last_ckpt, **kwargs)


def train(overrides: Sequence[str] | DictConfig = (), *, run_dir: str | Path | None = None) -> TrainResult:
    """Train as `python train.py <overrides>` would (the same config, checks and run folder: `run_dir`, or a fresh
    folder under runs/train), from a list of command-line overrides or an already composed config
    (`difflab.compose`)."""
    cfg = overrides if isinstance(overrides, DictConfig) else compose(list(overrides), "train", run_dir)
    return TrainResult(**run(cfg))
