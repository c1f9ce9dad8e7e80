"""`python evaluate.py ckpt=<path> sampler=ddim sampler.steps=50 metrics=full n_samples=10000`: the reported numbers.

Or `python evaluate.py images=<folder> data=<name>` to score a folder of images (e.g. from another codebase) with the
same protocol, or `python evaluate.py model=sd pipeline.path=<dir> prompts=<file>` (CLIP score and samples/sec over
a prompt list; FID/KID/IS too with `data=image_folder data.root=<reference>`). Writes `metrics.json` (values and
protocol) next to the images and logs the same to the configured loggers. The scoring is the Python API's
(`difflab.api.evaluating.evaluate`, what `DiffusionModel.evaluate` runs).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.config import rewrite_argv
from difflab.api.evaluating import evaluate, evaluated_as, read_prompts, reference_data
from difflab.api.images import folder_images
from difflab.api.models import load_configured
from difflab.api.sampling import resolve_seed
from difflab.conditions import INPUT_KEYS
from difflab.errors import ConfigError
from difflab.evaluation.suite import MetricsConfig, Networks
from difflab.utils.entry import hydra_main
from difflab.utils.images import write_png
from difflab.utils.loggers import task_loggers
from difflab.utils.wandb_artifacts import is_wandb, log_sample_table


def check_config(cfg: DictConfig, mcfg: MetricsConfig, prompts: list[str] | None) -> tuple[int, int, int, torch.device, Path]:
    """evaluate.py's values checked before loading or sampling: (n, seed, batch_size, device, out_dir); the output
    folder is created (writable, and without earlier results unless overwrite=true)."""
    default_n = len(prompts) if prompts else mcfg.n_samples
    given = cfg.get("n_samples") is not None
    n = checks.integer(cfg.n_samples if given else default_n, "n_samples" if given else "metrics.n_samples",
                       0 if mcfg.nll["enabled"] else 1)  # n_samples=0 with metrics=nll: the likelihood alone
    given = cfg.get("seed") is not None
    seed = resolve_seed(cfg.seed if given else mcfg.seed, "seed" if given else "metrics.seed")
    given = cfg.get("batch_size") is not None
    batch_size = checks.integer(cfg.batch_size if given else mcfg.batch_size, "batch_size" if given else "metrics.batch_size", 1)
    if cfg.get("guidance_scale") is not None:
        checks.real(cfg.guidance_scale, "guidance_scale", 0.0)
    checks.sampler_spec(cfg.get("sampler"))
    device = checks.inference_device(cfg.device)
    checks.inference_precision(cfg.precision, device)
    out_dir = checks.fresh_output(cfg.out_dir, "out_dir", bool(cfg.get("overwrite", False)))
    return n, seed, batch_size, device, out_dir


def run(cfg: DictConfig, networks: Networks | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (or a folder of images); returns the record written to metrics.json."""
    if (bool(cfg.get("ckpt")) or cfg.get("model") is not None) == bool(cfg.get("images")):
        raise ConfigError("Pass exactly one of ckpt=<checkpoint> (or model=sd) and images=<folder of images> "
                          "(config keys `ckpt`, `images`).")
    if cfg.get("images"):
        folder_images(Path(cfg.images))
    mcfg: MetricsConfig = instantiate(cfg.metrics, _convert_="all")
    prompts = read_prompts(cfg.prompts) if cfg.get("prompts") else None
    n, seed, batch_size, _, out_dir = check_config(cfg, mcfg, prompts)
    module = None
    if cfg.get("ckpt") or cfg.get("model") is not None:
        module = load_configured(cfg).module
        module.condition.refuse_foreign({key: cfg.get(key) for key in INPUT_KEYS})  # e.g. prompts= for a class model
    datamodule = reference_data(module, cfg.get("data"), prompts)

    def sink(images: torch.Tensor, index: torch.Tensor, texts: list[str]) -> None:
        (out_dir / "images").mkdir(exist_ok=True)
        for image, i, text in zip(images, index.tolist(), texts):
            write_png(image, out_dir / "images" / f"{i:06d}.png", text)

    with evaluated_as(module, guidance_scale=cfg.get("guidance_scale")) if module is not None else nullcontext():
        record, samples, rows = evaluate(
            module, mcfg, datamodule, n=n, seed=seed, batch_size=batch_size,
            images=Path(cfg.images) if cfg.get("images") else None, out_dir=out_dir, prompts=prompts,
            prompts_file=cfg.get("prompts"), negative_prompt=cfg.get("negative_prompt"), precision=str(cfg.precision),
            sink=sink if cfg.save_images else None, networks=networks,
            ckpt=str(Path(cfg.ckpt).resolve()) if cfg.get("ckpt") else None)
    with task_loggers(cfg.get("logger")) as loggers:
        for logger in loggers:
            logger.log_hyperparams({k: v for k, v in record.items() if k != "values"})
            logger.log_metrics({f"eval/{k}": v for k, v in record["values"].items() if v is not None}, step=0)
            if samples is not None and is_wandb(logger):
                log_sample_table(logger, samples, rows[: len(samples)] or None)
    return record


def main() -> None:
    """`difflab-evaluate ckpt=... [overrides]` (`python evaluate.py`): score a checkpoint or a folder of images."""
    hydra_main("evaluate", run, __name__, rewrite_argv)
