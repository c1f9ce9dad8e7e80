"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record."""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from difflab.utils.images import save_grid
from difflab.api import checks, readback
from difflab.conditions import INPUT_KEYS
from difflab.errors import ConfigError
from difflab.lit.checkpoint import load_module
from difflab.samplers import Edit, StackedGenerator, is_deterministic, sample_seeds, slerp
from difflab.samplers.base import StepCallback
from difflab.utils.progress import Progress
from difflab.utils.tensors import autocast_for
from difflab.data.files import CorruptImageError, DataNotFoundError, ImageFileDataset, to_model_range
from difflab.errors import IncompatibleCheckpointError, user_message
from difflab.utils.config import instantiate_group
from difflab.utils.stored_config import UntrustedTargetError, instantiate_stored
from difflab.utils.wandb_artifacts import log_sample_table, wandb_loggers

log = logging.getLogger(__name__)

MODES = ("generate", "img2img", "inpaint", "interpolate")


def run_data(module: Any, required: bool = False) -> Any:
    """The data module of the checkpoint's run (how it preprocesses image files: ROI crop, resize), or None when
    the checkpoint names none (e.g. model=sd) or it cannot be built here (then files are centre-cropped); with
    `required`, both are errors."""
    data = (module.run_config or {}).get("data") or {}
    if "_target_" not in data:
        if required:
            raise IncompatibleCheckpointError("The checkpoint records no data module, so its preprocessing (ROI crop, "
                                              "resize) is unknown: use a checkpoint written by python train.py.")
        return None
    try:
        return instantiate_stored(data, getattr(module, "checkpoint_path", "the checkpoint"), "data")
    except UntrustedTargetError:
        raise  # a hostile config is never worked around
    except Exception as err:  # its training data may live on another machine
        if user_message(err) is None:
            raise
        if required:
            raise ConfigError(f"Images are preprocessed as the checkpoint's training images, and its data module "
                              f"cannot be built here: {user_message(err)}") from None
        log.warning("edit inputs are centre-cropped: the run's data module cannot be built here (%s)", user_message(err))
        return None


def load_image(path: str, key: str, datamodule: Any, channels: int, resolution: int) -> torch.Tensor:
    """An image file as [1, C, R, R] in [-1, 1], preprocessed as the run's training images were (the data module's
    ROI crop and resize; a centre crop without one); clear errors name the key."""
    file = Path(path or "")
    if not path or not file.is_file():
        raise DataNotFoundError.for_path(path, key, f"`{key}` must name an image file.", "Image")
    dataset = (datamodule.file_dataset(file, channels) if datamodule is not None
               else ImageFileDataset(file.parent, [file.name], None, resolution, channels, center_crop=True))
    try:
        return to_model_range(dataset.load(0)[None])
    except CorruptImageError as err:
        raise CorruptImageError(f"{err} (config key `{key}`)") from None


def make_edit(cfg: DictConfig, module: Any, seed: int, n: int | None = None) -> tuple[Edit | None, dict[str, Any]]:
    """The `Edit` of sample.py's mode: img2img / inpaint from `init_image` (preprocessed by the run's data module,
    see `load_image`), interpolate between two noises; and what samples.json records about the inputs."""
    mode, n = str(cfg.get("mode", "generate")), int(cfg.n if n is None else n)
    if mode not in MODES:
        raise ConfigError.bad_value("mode", f"unknown mode {mode!r}", f"Use mode=<one of {', '.join(MODES)}>.")
    if mode == "generate":
        return None, {}
    channels, resolution = module.image_shape[0], module.image_shape[-1]
    if mode == "interpolate":
        if not is_deterministic(module.sampler):
            raise ConfigError.bad_value("sampler", f"mode=interpolate needs a deterministic sampler, not "
                                        f"{module.sampler.name} {module.sampler.knobs}",
                                        "Use sampler=ddim (eta=0), euler, heun, dpmpp_2m or ode.")
        pair = list(cfg.interpolate_between) if OmegaConf.is_list(cfg.interpolate_between) else []
        if len(pair) != 2:
            raise ConfigError.bad_value("interpolate_between", f"{cfg.interpolate_between!r} is not two image indices",
                                        "Pass interpolate_between=[0,1].")
        a, b = (checks.integer(i, "interpolate_between", 0) for i in pair)
        z = StackedGenerator(sample_seeds(seed, 1, a) + sample_seeds(seed, 1, b)).randn(
            (2, *module.latent_shape))  # latent models: noise in latent shape
        return Edit(noise=slerp(z[0], z[1], torch.linspace(0, 1, n))), {"interpolate_between": [a, b]}
    data = run_data(module)
    init = load_image(cfg.get("init_image"), "init_image", data, channels, resolution).expand(n, -1, -1, -1)
    record = {"init_image": cfg.get("init_image"), "strength": float(cfg.strength), "mask": cfg.get("mask"),
              "preprocessing": data.preprocessing() if data is not None else
              {"resolution": resolution, "center_crop": True, "resize": "bicubic"}}
    if mode == "img2img":
        return Edit(init=init, strength=checks.real(cfg.strength, "strength", 0.0, 1.0)), record
    mask = load_image(cfg.get("mask"), "mask", data, 1, resolution)  # white (1) = regenerate
    keep = (mask < 0).float().expand(n, channels, -1, -1)
    return Edit(init=init, strength=1.0, mask=keep), {**record, "strength": 1.0}


def condition_inputs(cfg: DictConfig) -> dict[str, Any]:
    """The condition-related keys the user gave (`class_label`, `cond`, `prompt`, ...; None when not given), and
    `sweep_seeds` (it has a default, so only a sweep reads it)."""
    return {**{key: cfg.get(key) for key in INPUT_KEYS}, "sweep_seeds": cfg.get("sweep_seeds", 1)}


def resolve_seed(seed: Any, key: str = "seed") -> int:
    """The run seed (an integer in [0, 2^63)); -1 picks a random one, to be recorded."""
    seed = checks.seed(seed, key)
    if seed == -1:
        seed = random.SystemRandom().randrange(1 << 63)
        log.info("seed=-1: using seed %d", seed)
    return seed


def load_model(cfg: DictConfig) -> Any:
    """`ckpt=<checkpoint>` (the model rebuilt from its saved config) or `model=sd` (a pretrained pipeline), on CPU."""
    overrides = OmegaConf.to_container(cfg.scheduler) if cfg.get("scheduler") else {}
    scheduler_overrides = {k: v for k, v in overrides.items() if v is not None}
    if cfg.get("ckpt"):
        return load_module(cfg.ckpt, sampler=checks.sampler_spec(cfg.get("sampler")),
                           scheduler_overrides=scheduler_overrides, use_ema=cfg.use_ema)
    if cfg.get("model") is not None:
        from hydra.utils import instantiate

        checks.sampler_spec(cfg.get("sampler"))
        return instantiate(cfg.model, sampler=cfg.get("sampler"), scheduler_overrides=scheduler_overrides)
    raise ConfigError("Config key `ckpt` is required: pass ckpt=<a checkpoint, e.g. runs/train/<run>/checkpoints/"
                      "last.ckpt>, or model=sd pipeline.path=<Stable Diffusion folder>.")


def check_config(cfg: DictConfig) -> tuple[torch.device, str]:
    """sample.py's values checked before any loading or sampling: (device, precision); the output folder is created
    (it must be writable and hold no earlier results unless overwrite=true)."""
    checks.integer(cfg.n, "n", 1)
    checks.integer(cfg.batch_size, "batch_size", 1)
    for key in ("guidance_scale", "guidance_rescale"):
        if cfg.get(key) is not None:
            checks.real(cfg[key], key)
    if str(cfg.get("mode", "generate")) == "img2img":
        checks.real(cfg.strength, "strength", 0.0, 1.0)
    checks.sampler_spec(cfg.get("sampler"))
    device = checks.inference_device(cfg.device)
    precision = checks.inference_precision(cfg.precision, device)
    checks.fresh_output(cfg.out_dir, "out_dir", bool(cfg.get("overwrite", False)))
    return device, precision


def given_or(value: Any, default: Any) -> Any:
    """The value given on the command line, or the model's default when it was not given (None)."""
    return default if value is None else value


def negative_condition(module: Any, negative_prompt: str | None) -> torch.Tensor | None:
    """Guidance's unconditional branch when a negative prompt is given ([1, L, D]); None = the null condition."""
    return module.condition.to_net([negative_prompt]) if negative_prompt else None


def write_conditions(rows: list[dict[str, Any]], path: Path, with_files: bool) -> Path | None:
    """`conditions.csv`: each image's file (images/<index>.png) and its requested condition; None without rows."""
    if not rows:
        return None
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "file", *rows[0]])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"index": i, "file": f"images/{i:06d}.png" if with_files else "", **row})
    return path


def log_to_wandb(cfg: DictConfig, record: dict[str, Any], images: torch.Tensor, rows: list[dict[str, Any]]) -> None:
    """With `logger=wandb`: the record as the run's config and a Table of the images (linked to the training run)."""
    for logger in wandb_loggers(instantiate_group(cfg.get("logger"))):
        logger.log_hyperparams(record)
        log_sample_table(logger, images, rows[: len(images)] or None)
        logger.experiment.finish()


def run(cfg: DictConfig, load: Callable[[DictConfig], Any] = load_model,
        callback: StepCallback | None = None) -> dict[str, Any]:
    """Sample `n` images from a checkpoint or pretrained pipeline; returns the output folder, NFE, image tensor,
    grid file and the samples.json record.

    `load` turns the config into the model (the studio passes its cache of loaded models); `callback` is the
    samplers' step hook, called after the progress count moved with `info["done"]` / `info["total"]` images (the
    studio's progress bar and Stop button)."""
    seed = resolve_seed(cfg.seed)
    device, precision = check_config(cfg)
    module = load(cfg)
    module.to(device)
    condition = module.condition
    requests = condition.parse(condition_inputs(cfg), int(cfg.n))  # before sampling: inputs that mean nothing stop here
    sweep = requests.sweep  # sweep=: noise-major images, `sweep.count` per row
    reader = readback.load_reader(cfg.regressor, condition.stats, sweep) if cfg.get("regressor") else None
    n = len(requests) or int(cfg.n)  # cond_csv: one image per row; sweep: seeds x count
    edit, edit_record = make_edit(cfg, module, seed, sweep.seeds if sweep is not None else n)
    with autocast_for(device, precision):
        uncond = negative_condition(module, cfg.get("negative_prompt"))
        progress = Progress("sampling", n, "images")
        kwargs = {"batch_size": int(cfg.batch_size), "guidance_scale": cfg.get("guidance_scale"),
                  "guidance_rescale": cfg.get("guidance_rescale"), "edit": edit, "progress": progress, "callback": callback,
                  **({"uncond": uncond} if uncond is not None else {})}
        if sweep is not None:
            images, nfe = readback.generate_sweep(module, requests, seed, **kwargs)
        else:
            images, nfe = module.generate(n, seed=seed, cond=condition.to_net(requests.values), **kwargs)
        progress.close()

    out_dir = Path(cfg.out_dir)
    if cfg.save_images:
        (out_dir / "images").mkdir(exist_ok=True)
        for i, img in enumerate(images):
            save_image((img + 1) / 2, out_dir / "images" / f"{i:06d}.png")
    grid = save_grid(images, out_dir / "grid.png", nrow=sweep.count if sweep is not None else None)
    rows, measured = condition.rows(requests), {}
    if reader is not None:
        readings, measured = readback.read_back(reader, cfg.regressor, images, requests, condition.stats, out_dir)
        rows = [{**row, **reading} for row, reading in zip(rows, readings)]
    table = write_conditions(rows, out_dir / "conditions.csv", bool(cfg.save_images))
    spec = module.sampling_spec()
    record = {
        "ckpt": str(Path(cfg.ckpt).resolve()) if cfg.get("ckpt") else None, "n": n, "seed": seed, "nfe": nfe,
        "sampler": spec.record(), "scheduler": repr(module.scheduler),
        "use_ema": bool(cfg.use_ema), "precision": precision, "device": str(device),
        "guidance_scale": given_or(cfg.get("guidance_scale"), module.guidance_scale) if condition.guided else None,
        **({"guidance_rescale": given_or(cfg.get("guidance_rescale"), module.guidance_rescale)} if condition.guided else {}),
        **({"pipeline": str(cfg.pipeline.path)} if cfg.get("pipeline") else {}),
        "condition": condition.kind, **condition.record(requests),
        **({"cond_csv": str(Path(cfg.cond_csv).resolve())} if cfg.get("cond_csv") else {}),
        **({"conditions": str(table)} if table is not None else {}),
        **({"measured": measured} if measured else {}),
        **({"negative_prompt": cfg.negative_prompt} if cfg.get("negative_prompt") else {}),
        "mode": str(cfg.get("mode", "generate")), **edit_record,
    }
    (out_dir / "samples.json").write_text(json.dumps(record, indent=2))
    log_to_wandb(cfg, record, images, condition.rows(requests))
    log.info("wrote %d images and %s (NFE %d per image)", len(images), grid, nfe)
    return {"out_dir": out_dir, "nfe": nfe, "images": images, "grid": grid, "record": record}
