"""`python evaluate.py ckpt=<path> sampler=ddim sampler.steps=50 metrics=full n_samples=10000`: the reported numbers.

Or `python evaluate.py images=<folder> data=<name>` to score a folder of images (e.g. from
another codebase) with the same protocol, or `python evaluate.py model=sd pipeline.path=<dir> prompts=<file>`
(CLIP score and samples/sec over a prompt list; FID/KID/IS too with `data=image_folder data.root=<reference>`). Writes `metrics.json` (values and protocol) next to
the images and logs the same to the configured loggers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision.utils import save_image

from difflab.callbacks.metrics import STRIP_SAMPLES
from difflab.utils.images import save_grid
from difflab.api import checks
from difflab.api.sampling import condition_inputs, load_model, negative_condition, resolve_seed
from difflab.utils.tensors import autocast_for
from difflab.errors import ConfigError
from difflab.data.base import collate_batch
from difflab.data.files import DataNotFoundError
from difflab.data.files import EXTENSIONS, ImageFileDataset, list_images
from difflab.evaluation.score import metrics_record, sample_and_score, write_record
from difflab.evaluation.likelihood import data_bits_per_dim
from difflab.evaluation.suite import MetricsConfig, MetricSuite, Networks
from difflab.utils.config import instantiate_group
from difflab.utils.progress import Progress
from difflab.utils.stored_config import instantiate_stored
from difflab.utils.wandb_artifacts import is_wandb, log_sample_table
from difflab.data.image_text import read_index

log = logging.getLogger(__name__)
STRIP = "samples_strip.png"


def _data_config(cfg: DictConfig, saved: dict[str, Any] | None) -> DictConfig:
    """The data module config: `data=<name>` from the command line, else the checkpoint's own."""
    if cfg.get("data") is not None:
        return cfg.data
    if saved and saved.get("data"):
        return OmegaConf.create(saved["data"])
    raise ConfigError("Config key `data` is required: no data set for the reference statistics; pass data=<name> "
                      "(e.g. data=digits, or data=image_folder data.root=<reference images>).")


def folder_images(folder: Path) -> list[Path]:
    """The image files of `images=<folder>`; a clear error when the folder is missing or holds none."""
    if not folder.exists():
        raise DataNotFoundError.for_path(folder, "images", "Pass images=<folder of generated PNG/JPEG files>.", "Images")
    files = list_images(folder, EXTENSIONS)
    if not files:
        raise DataNotFoundError.for_path(folder, "images", f"The folder holds no {'/'.join(EXTENSIONS)} files.", "Images")
    return files


def score_folder(folder: Path, datamodule: Any, suite: MetricSuite, batch_size: int) -> dict[str, float]:
    """Score the images of `folder` (sorted; resized to the data set's resolution when they differ)."""
    files = folder_images(folder)
    dataset = ImageFileDataset(folder, files, None, datamodule.resolution, datamodule.channels, center_crop=False)
    offset, progress = 0, Progress("features", len(files), "images")
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_batch):
        images = batch["image"]
        suite.update(images, torch.arange(offset, offset + images.shape[0]))
        offset += images.shape[0]
        progress.update(images.shape[0])
    progress.close()
    values = suite.compute()
    values["n_images"] = float(offset)
    return values


def read_prompts(path: str) -> list[str]:
    """Prompts of a .txt file (one per line, blank lines skipped) or the captions of a .jsonl/.csv index."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError.for_path(file, "prompts", "Pass prompts=<a .txt file, one prompt per line, or a "
                                         ".jsonl/.csv index with a caption column>.", "Prompt file")
    if file.suffix.lower() in (".jsonl", ".csv"):
        prompts = [caption for _, caption in read_index(file)]
    else:
        prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError.bad_value("prompts", f"'{file}' holds no prompts", "Give a file with one prompt per line.")
    return prompts


def _sample_checkpoint(cfg: DictConfig, module: Any, suite: MetricSuite, datamodule: Any, *, n: int, seed: int,
                       batch_size: int, out_dir: Path, prompts: list[str] | None = None
                       ) -> tuple[dict[str, float], torch.Tensor | None, list[dict[str, Any]]]:
    """Sample n images from the module into the suite, writing them as PNGs and a grid; returns the values, the
    first (up to 64) images and the condition of each image."""
    image_dir = out_dir / "images"
    preview: list[torch.Tensor] = []

    def sink(images: torch.Tensor, index: torch.Tensor) -> None:
        if not preview:
            preview.append(images[:64])
        if cfg.save_images:
            image_dir.mkdir(exist_ok=True)
            for img, i in zip(images, index.tolist()):
                save_image((img + 1) / 2, image_dir / f"{i:06d}.png")

    requests = module.condition.draw(n, datamodule, prompts)
    with autocast_for(torch.device(module.device), str(cfg.precision)):
        uncond = negative_condition(module, cfg.get("negative_prompt"))
        values = sample_and_score(module, suite, n=n, seed=seed, batch_size=batch_size, requests=requests,
                                  sink=sink, uncond=uncond)
    if preview:
        save_grid(preview[0], out_dir / "grid.png")
        save_grid(preview[0][:STRIP_SAMPLES], out_dir / STRIP, nrow=STRIP_SAMPLES)  # its row of the comparison gallery
    return values, preview[0] if preview else None, module.condition.rows(requests)


def _model_and_data(cfg: DictConfig, device: torch.device, prompts: list[str] | None) -> tuple[Any, Any]:
    """The model to sample (None for images=<folder>) and the data module of the reference set (None for
    prompts without data=...)."""
    module = None
    if cfg.get("ckpt") or cfg.get("model") is not None:
        module = load_model(cfg).to(device)
        module.condition.refuse_foreign(condition_inputs(cfg))  # e.g. prompts=<file> for a class-conditional model
        if cfg.get("guidance_scale") is not None:
            module.guidance_scale = float(cfg.guidance_scale)
    if prompts and cfg.get("data") is None:
        return module, None
    if cfg.get("data") is None and module is not None:  # the checkpoint's own data module: its config is data
        return module, instantiate_stored(_data_config(cfg, module.run_config), getattr(module, "checkpoint_path", "the model"), "data")
    return module, instantiate(_data_config(cfg, module.run_config if module is not None else None))


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
        checks.real(cfg.guidance_scale, "guidance_scale")
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
    if prompts and cfg.get("data") is None:  # no reference images: CLIP score and samples/sec only
        mcfg.fid = mcfg.kid = mcfg.inception_score = mcfg.lpips_diversity = mcfg.broken_rate = False
    n, seed, batch_size, device, out_dir = check_config(cfg, mcfg, prompts)

    module, datamodule = _model_and_data(cfg, device, prompts)
    suite = MetricSuite(mcfg, device, checks=module.condition.checks if module is not None else (),
                        networks=networks, strict=True)
    if datamodule is not None:
        suite.prepare_reference(datamodule)

    if module is None:
        if mcfg.nll["enabled"]:
            raise ConfigError.bad_value("metrics", "metrics=nll needs a model", "Pass ckpt=<checkpoint> instead of images=<folder>.")
        values = score_folder(Path(cfg.images), datamodule, suite, mcfg.feature_batch_size)
        n, extra = int(values.pop("n_images")), {"images": str(Path(cfg.images).resolve())}
        samples, rows = None, []
    else:
        values, samples, rows = _sample_checkpoint(cfg, module, suite, datamodule, n=n, seed=seed, batch_size=batch_size,
                                                   out_dir=out_dir, prompts=prompts) if n > 0 else ({}, None, [])
        if mcfg.nll["enabled"]:
            values.update(data_bits_per_dim(module, datamodule, **{k: v for k, v in mcfg.nll.items() if k != "enabled"}))
        extra = {"images": str((out_dir / "images").resolve()) if cfg.save_images and n > 0 else None,
                 "precision": str(cfg.precision), "sample_strip": STRIP if (out_dir / STRIP).is_file() else None}
        if prompts:
            extra.update(prompts=str(Path(cfg.prompts).resolve()), n_prompts=len(prompts),
                         negative_prompt=cfg.get("negative_prompt"))
        if mcfg.nll["enabled"]:
            extra["nll"] = dict(mcfg.nll)
    record = metrics_record(
        kind="evaluate", values=values, protocol=suite.protocol(), module=module, n_samples=n, seed=seed,
        run_dir=out_dir, global_step=getattr(module, "checkpoint_global_step", 0),
        ckpt=str(Path(cfg.ckpt).resolve()) if cfg.get("ckpt") else None, extra=extra,
        data={"name": datamodule.name, "resolution": datamodule.resolution} if datamodule is not None else
        {"name": "prompts", "resolution": module.image_shape[-1]},
    )
    path = write_record(record, out_dir / "metrics.json")
    for logger in instantiate_group(cfg.get("logger")):
        logger.log_hyperparams({k: v for k, v in record.items() if k != "values"})
        logger.log_metrics({f"eval/{k}": v for k, v in record["values"].items() if v is not None}, step=0)
        if samples is not None and is_wandb(logger):
            log_sample_table(logger, samples, rows[: len(samples)] or None)
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()
        elif hasattr(logger, "save"):
            logger.save()
    log.info("wrote %s: %s", path, {k: round(v, 4) for k, v in record["values"].items() if v is not None})
    return record
