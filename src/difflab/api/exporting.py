"""`python export.py ckpt=<checkpoint> format=diffusers out=<folder>`: a difflab model as a diffusers pipeline folder.

The folder loads offline with `DDPMPipeline.from_pretrained(<folder>)` (`LDMPipeline` for latent models) and
`UNet2DModel.from_pretrained(<folder>, subfolder="unet")`; difflab loads it back with `model=diffusers
pipeline.path=<folder>`. Beside the diffusers files: `difflab.json` (condition, guidance, source run), `samples.png`
(`card.n` images with the configured sampler) and the model card `README.md`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from difflab.utils.images import save_grid
from difflab.api import checks
from difflab.conditions import INPUT_KEYS
from difflab.errors import ConfigError
from difflab.lit.checkpoint import load_module, read_checkpoint
from difflab.lit.pipelines import export_pipeline, metadata
from difflab.utils.model_card import write_card

log = logging.getLogger(__name__)

FORMATS = ("diffusers",)


def check_config(cfg: DictConfig) -> tuple[Path, Any]:
    """export.py's values checked before loading anything: (the output folder, created; the card's sampler)."""
    if str(cfg.format) not in FORMATS:
        raise ConfigError.bad_value("format", f"{cfg.format!r} is not an export format",
                                    f"Use format={' or '.join(FORMATS)} (a diffusers pipeline folder).")
    if not cfg.get("ckpt"):
        raise ConfigError("Config key `ckpt` is required: pass ckpt=<a checkpoint, e.g. runs/train/<run>/checkpoints/"
                          "last.ckpt>.")
    ckpt = Path(str(cfg.ckpt)).expanduser()
    if not ckpt.is_file():
        read_checkpoint(ckpt)  # its clear "not found" error
    checks.integer(cfg.card.n, "card.n", 0)
    checks.seed(cfg.card.seed, "card.seed")
    spec = checks.sampler_spec(cfg.get("sampler"))
    out = checks.fresh_output(cfg.out, "out", bool(cfg.get("overwrite", False)))
    return out, spec


def sample_grid(module: Any, spec: Any, n: int, seed: int, path: Path) -> Path | None:
    """`n` images of the model (classes cycled for class-conditional models) as one PNG grid; None for n = 0."""
    if n == 0:
        return None
    condition = module.condition
    requests = condition.parse({key: None for key in INPUT_KEYS}, n)
    images, _ = module.generate(n, seed=seed, sampler=spec, cond=condition.to_net(requests.values))
    return save_grid(images, path)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export a checkpoint; returns the output folder and the files written."""
    out, spec = check_config(cfg)
    ckpt = Path(str(cfg.ckpt)).expanduser().resolve()
    module = load_module(ckpt, use_ema=bool(cfg.use_ema))
    card = {"n": int(cfg.card.n), "seed": int(cfg.card.seed), "sampler": module.sampling_spec(spec).record()}
    extra = {"source_checkpoint": str(ckpt), "use_ema": bool(cfg.use_ema), "card": card}
    export_pipeline(module, out, extra)
    grid = sample_grid(module, spec, card["n"], card["seed"], out / "samples.png")
    latent = not type(module.autoencoder).__name__.startswith("Identity")
    params = sum(p.numel() for p in module.net.parameters())
    readme = write_card(out, run_config=module.run_config or {}, meta={**metadata(module), **extra},
                        pipeline="LDMPipeline" if latent else "DDPMPipeline", ckpt=ckpt, grid=grid, unet_params=params)
    log.info("wrote the diffusers pipeline %s (model card %s)", out, readme)
    return {"out": out, "readme": readme, "grid": grid}
