"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from difflab.callbacks.sample_grid import save_grid
from difflab.lit.checkpoint import load_module

log = logging.getLogger(__name__)

AUTOCAST = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Sample `n` images from a checkpoint; returns the output folder, NFE and image tensor."""
    precision = str(cfg.precision)
    if precision not in AUTOCAST:
        raise ValueError(f"precision must be one of {list(AUTOCAST)}, got {precision!r}")
    overrides = OmegaConf.to_container(cfg.scheduler) if cfg.get("scheduler") else {}
    scheduler_overrides = {k: v for k, v in overrides.items() if v is not None}
    module = load_module(cfg.ckpt, sampler=cfg.get("sampler"), scheduler_overrides=scheduler_overrides, use_ema=cfg.use_ema)
    device = pick_device(str(cfg.device))
    module.to(device)
    cond = None
    if module.cond_key == "label":
        num_classes = (module.run_config or {}).get("data", {}).get("num_classes") or 10
        labels = torch.full((cfg.n,), int(cfg.class_label)) if cfg.class_label is not None else torch.arange(cfg.n) % num_classes
        cond = labels
    dtype = AUTOCAST[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with autocast:
        images, nfe = module.generate(int(cfg.n), seed=int(cfg.seed), batch_size=int(cfg.batch_size), cond=cond,
                                      guidance_scale=cfg.get("guidance_scale"), guidance_rescale=cfg.get("guidance_rescale"))

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.save_images:
        (out_dir / "images").mkdir(exist_ok=True)
        for i, img in enumerate(images):
            save_image((img + 1) / 2, out_dir / "images" / f"{i:06d}.png")
    grid = save_grid(images, out_dir / "grid.png")
    spec = module.sampler
    record = {
        "ckpt": str(Path(cfg.ckpt).resolve()), "n": int(cfg.n), "seed": int(cfg.seed), "nfe": nfe,
        "sampler": {"name": spec.name, "steps": spec.steps, **spec.knobs}, "scheduler": repr(module.scheduler),
        "use_ema": bool(cfg.use_ema), "precision": precision, "device": str(device),
        "guidance_scale": cfg.get("guidance_scale") if cond is not None else None,
    }
    (out_dir / "samples.json").write_text(json.dumps(record, indent=2))
    log.info("wrote %d images and %s (NFE %d per image)", len(images), grid, nfe)
    return {"out_dir": out_dir, "nfe": nfe, "images": images, "grid": grid}
