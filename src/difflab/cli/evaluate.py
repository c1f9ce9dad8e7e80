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

from hydra.utils import instantiate
from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.config import rewrite_argv
from difflab.api.evaluating import evaluate, evaluated_as, read_prompts, reference_data
from difflab.api.images import folder_images
from difflab.api.models import load_configured
from difflab.api.sampling import resolve_seed
from difflab.cli.resume import ImageWriter, output_folder, request_of, resume_command
from difflab.conditions import INPUT_KEYS
from difflab.lit.lora import apply_loras
from difflab.nets.lora import parse_lora_list
from difflab.errors import ConfigError
from difflab.evaluation.suite import MetricsConfig, Networks
from difflab.utils.entry import hydra_main, on_interrupt
from difflab.utils.images import read_png
from difflab.utils.loggers import task_loggers
from difflab.utils.wandb_artifacts import is_wandb, log_sample_table


def check_config(cfg: DictConfig, mcfg: MetricsConfig,
                 prompts: list[str] | None) -> tuple[int, int, int, Path, dict[int, Path], dict[str, Any]]:
    """evaluate.py's values checked before loading or sampling: (n, seed, batch_size, out_dir, the images an
    interrupted evaluation made there, the request); the output folder is created (writable, and without earlier results unless
    overwrite=true, or the unfinished evaluation of the same request with resume=true)."""
    default_n = len(prompts) if prompts else mcfg.n_samples
    given = cfg.get("n_samples") is not None
    n = 0 if cfg.get("images") else checks.integer(  # images=<folder>: its files are the samples
        cfg.n_samples if given else default_n, "n_samples" if given else "metrics.n_samples",
        0 if mcfg.nll["enabled"] else 1)  # n_samples=0 with metrics=nll: the likelihood alone
    given = cfg.get("seed") is not None
    seed = resolve_seed(cfg.seed if given else mcfg.seed, "seed" if given else "metrics.seed")
    given = cfg.get("batch_size") is not None
    batch_size = checks.integer(cfg.batch_size if given else mcfg.batch_size, "batch_size" if given else "metrics.batch_size", 1)
    if cfg.get("guidance_scale") is not None:
        checks.real(cfg.guidance_scale, "guidance_scale", 0.0)
    checks.sampler_spec(cfg.get("sampler"))
    parse_lora_list(cfg.get("lora"))
    device = checks.inference_device(cfg.device)
    checks.inference_precision(cfg.precision, device)
    request = {**request_of(cfg), "seed": seed}
    out_dir, done = output_folder(cfg, request, "metrics.json")
    return n, int(request["seed"]), batch_size, out_dir, done, request


def check_metrics(mcfg: MetricsConfig) -> None:
    """The preset scores something (metrics=none is for training runs)."""
    scored = [m for m in ("fid", "kid", "inception_score", "lpips_diversity", "clip_score", "broken_rate")
              if getattr(mcfg, m)] + [name for name, on in mcfg.plugins.items() if on]
    if not scored and not mcfg.nll["enabled"]:
        raise ConfigError.bad_value("metrics", "this preset turns every metric off (metrics=none is for training runs)",
                                    "Pass metrics=fast, default or full (or metrics=nll for the likelihood).")


def run(cfg: DictConfig, networks: Networks | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (or a folder of images); returns the record written to metrics.json."""
    if (bool(cfg.get("ckpt")) or cfg.get("model") is not None) == bool(cfg.get("images")):
        raise ConfigError("Pass exactly one of ckpt=<checkpoint> (or model=sd) and images=<folder of images> "
                          "(config keys `ckpt`, `images`).")
    mcfg: MetricsConfig = instantiate(cfg.metrics, _convert_="all")
    check_metrics(mcfg)
    if cfg.get("images"):
        folder_images(Path(cfg.images))
    prompts = read_prompts(cfg.prompts) if cfg.get("prompts") else None
    n, seed, batch_size, out_dir, done, request = check_config(cfg, mcfg, prompts)
    module = None
    if cfg.get("ckpt") or cfg.get("model") is not None:
        module = load_configured(cfg).module
        module.condition.refuse_foreign({key: cfg.get(key) for key in INPUT_KEYS})  # e.g. prompts= for a class model
        apply_loras(module, cfg.get("lora"))  # lora=[path:0.8, ...]: its rows name them
    datamodule = reference_data(module, cfg.get("data"), prompts)
    if module is not None and cfg.save_images:
        checks.disk_room(out_dir, n - len(done), module.image_shape, "n_samples")
    writer = ImageWriter(out_dir, request)  # a model's images are written as they are made: an interruption resumes
    on_interrupt(f"The images made so far are in {out_dir}; continue with: {resume_command(out_dir, 'evaluate.py')}")

    with evaluated_as(module, guidance_scale=cfg.get("guidance_scale")) if module is not None else nullcontext():
        record, samples, rows = evaluate(
            module, mcfg, datamodule, n=n, seed=seed, batch_size=batch_size,
            images=Path(cfg.images) if cfg.get("images") else None, out_dir=out_dir, prompts=prompts,
            prompts_file=cfg.get("prompts"), negative_prompt=cfg.get("negative_prompt"), precision=str(cfg.precision),
            sink=writer if cfg.save_images else None, networks=networks,
            ckpt=str(Path(cfg.ckpt).resolve()) if cfg.get("ckpt") else None,
            done={i: read_png(p, module.image_shape[0]) for i, p in done.items()} if module is not None else None)
    writer.finish()
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
