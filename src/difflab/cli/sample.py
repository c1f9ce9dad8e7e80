"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record."""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from difflab.callbacks.sample_grid import save_grid
from difflab.cli import checks
from difflab.errors import ConfigError
from difflab.lit.checkpoint import load_module
from difflab.samplers import Edit, StackedGenerator, is_deterministic, sample_seeds, slerp

log = logging.getLogger(__name__)

AUTOCAST = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for the network under `precision` (32 | bf16 | fp16); a no-op for 32."""
    if precision not in AUTOCAST:
        raise ConfigError.bad_value("precision", f"{precision!r} is not a precision", "Use precision=32, bf16 or fp16.")
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


MODES = ("generate", "img2img", "inpaint", "interpolate")


def load_image(path: str, channels: int, resolution: int, key: str) -> torch.Tensor:
    """An image file as [1, C, R, R] in [-1, 1] (centre crop + bicubic resize); clear errors name the key."""
    from PIL import Image

    from difflab.data.base import CorruptImageError, DataNotFoundError, to_model_range
    from difflab.data.image_folder import fit_square, to_mode

    if not path or not Path(path).is_file():
        raise DataNotFoundError.for_path(path, key, f"`{key}` must name an image file.", "Image")
    try:
        with Image.open(path) as img:
            img = fit_square(to_mode(img, channels), resolution, center_crop=True)
            array = torch.from_numpy(np.array(img, dtype=np.uint8)).reshape(resolution, resolution, -1)
    except Exception as e:  # PIL raises many types
        raise CorruptImageError.for_file(path, f"{type(e).__name__}: {e}") from None
    return to_model_range(array.permute(2, 0, 1)[None])


def make_edit(cfg: DictConfig, module: Any, seed: int) -> Edit | None:
    """The `Edit` of sample.py's mode: img2img / inpaint from `init_image`, interpolate between two noises."""
    mode, n = str(cfg.get("mode", "generate")), int(cfg.n)
    if mode not in MODES:
        raise ConfigError.bad_value("mode", f"unknown mode {mode!r}", f"Use mode=<one of {', '.join(MODES)}>.")
    if mode == "generate":
        return None
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
        return Edit(noise=slerp(z[0], z[1], torch.linspace(0, 1, n)))
    init = load_image(cfg.get("init_image"), channels, resolution, "init_image").expand(n, -1, -1, -1)
    if mode == "img2img":
        return Edit(init=init, strength=checks.real(cfg.strength, "strength", 0.0, 1.0))
    mask = load_image(cfg.get("mask"), 1, resolution, "mask")  # white (1) = regenerate
    keep = (mask < 0).float().expand(n, channels, -1, -1)
    return Edit(init=init, strength=1.0, mask=keep)


def vector_condition(cfg: DictConfig, module: Any) -> torch.Tensor:
    """sample.py's `cond` ({column: raw value}) z-scored with the run's training statistics, for all n images: [n, D]."""
    stats = getattr(module, "cond_stats", None)
    if stats is None:
        raise ValueError(f"{cfg.ckpt} holds no condition statistics (`cond_stats`); it was not trained on vector data")
    values = cfg.get("cond")
    if isinstance(values, str):
        values = OmegaConf.create(values)  # cond='{x1: 0.3, x2: 1.2}' given as one string
    if not isinstance(values, (dict, DictConfig)):
        example = ", ".join(f"{c}: {m:.3g}" for c, m in zip(stats.columns, stats.mean))
        raise ValueError(f"this model is conditioned on {stats.columns}: pass cond='{{{example}}}' (raw units)")
    raw = stats.raw_vector(OmegaConf.to_container(values) if isinstance(values, DictConfig) else values)
    return stats.encode(raw).expand(int(cfg.n), -1)


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


def text_conditions(module: Any, prompts: list[str], negative_prompt: str | None) -> tuple[Any, Any]:
    """(cond [n, L, D], uncond [1, L, D] or None) of a text-conditioned model; (None, None) for the others."""
    if not hasattr(module, "encode_prompts"):
        return None, None
    if any(p is None for p in prompts):
        raise ValueError("a text-conditioned model needs prompt=\"...\" (config key `prompt`)")
    uncond = module.encode_prompts([negative_prompt]) if negative_prompt else None
    return module.encode_prompts(prompts), uncond


def run(cfg: DictConfig) -> dict[str, Any]:
    """Sample `n` images from a checkpoint or pretrained pipeline; returns the output folder, NFE and image tensor."""
    seed = resolve_seed(cfg.seed)
    device, precision = check_config(cfg)
    module = load_model(cfg)
    module.to(device)
    cond, uncond = text_conditions(module, [cfg.get("prompt")] * int(cfg.n), cfg.get("negative_prompt"))
    if module.cond_key == "label":
        num_classes = (module.run_config or {}).get("data", {}).get("num_classes") or 10
        labels = torch.full((cfg.n,), int(cfg.class_label)) if cfg.class_label is not None else torch.arange(cfg.n) % num_classes
        cond = labels
    elif module.cond_key == "cond":
        cond = vector_condition(cfg, module)
    with autocast_for(device, precision):
        extra = {"uncond": uncond} if uncond is not None else {}
        images, nfe = module.generate(int(cfg.n), seed=seed, batch_size=int(cfg.batch_size), cond=cond,
                                      guidance_scale=cfg.get("guidance_scale"), guidance_rescale=cfg.get("guidance_rescale"),
                                      edit=make_edit(cfg, module, seed), **extra)

    out_dir = Path(cfg.out_dir)
    if cfg.save_images:
        (out_dir / "images").mkdir(exist_ok=True)
        for i, img in enumerate(images):
            save_image((img + 1) / 2, out_dir / "images" / f"{i:06d}.png")
    grid = save_grid(images, out_dir / "grid.png")
    spec = module.sampler
    record = {
        "ckpt": str(Path(cfg.ckpt).resolve()) if cfg.get("ckpt") else None, "n": int(cfg.n), "seed": seed, "nfe": nfe,
        "sampler": {"name": spec.name, "steps": spec.steps, **spec.knobs}, "scheduler": repr(module.scheduler),
        "use_ema": bool(cfg.use_ema), "precision": precision, "device": str(device),
        "guidance_scale": cfg.get("guidance_scale") if cond is not None else None,
        **({"pipeline": str(cfg.pipeline.path)} if cfg.get("pipeline") else {}),
        **({"prompt": cfg.prompt, "negative_prompt": cfg.get("negative_prompt"),
            "guidance_rescale": cfg.get("guidance_rescale")} if uncond is not None or hasattr(module, "encode_prompts") else {}),
        **({"cond": dict(zip(module.cond_stats.columns, module.cond_stats.decode(cond[0]).tolist()))}
           if module.cond_key == "cond" else {}),
        "mode": str(cfg.get("mode", "generate")),
        **({"init_image": cfg.get("init_image"), "strength": float(cfg.strength), "mask": cfg.get("mask")}
           if cfg.get("mode") in ("img2img", "inpaint") else {}),
        **({"interpolate_between": list(cfg.interpolate_between)} if cfg.get("mode") == "interpolate" else {}),
    }
    (out_dir / "samples.json").write_text(json.dumps(record, indent=2))
    log.info("wrote %d images and %s (NFE %d per image)", len(images), grid, nfe)
    return {"out_dir": out_dir, "nfe": nfe, "images": images, "grid": grid}
