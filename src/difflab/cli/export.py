"""`python export.py ckpt=<checkpoint> format=diffusers out=<folder>`: a difflab model as a diffusers pipeline folder.

The folder loads offline with `DDPMPipeline.from_pretrained(<folder>)` (`LDMPipeline` for latent models) and
`UNet2DModel.from_pretrained(<folder>, subfolder="unet")`; difflab loads it back with `model=diffusers
pipeline.path=<folder>` (or `difflab.load(<folder>)`). Beside the diffusers files: `difflab.json` (condition, guidance,
source run), `samples.png` (`card.n` images with the configured sampler) and the model card `README.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.config import rewrite_argv
from difflab.api.models import DiffusionModel, load
from difflab.errors import ConfigError
from difflab.lit.checkpoint import read_checkpoint
from difflab.utils.entry import hydra_main

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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export a checkpoint; returns the output folder and the files written."""
    out, spec = check_config(cfg)
    ckpt = Path(str(cfg.ckpt)).expanduser().resolve()
    model = load(ckpt, use_ema=bool(cfg.use_ema), device="cpu", expect=DiffusionModel)
    return model.export(out, sampler=spec, card_n=int(cfg.card.n), card_seed=int(cfg.card.seed), checked=True)


def main() -> None:
    """`difflab-export ckpt=... out=<folder>` (`python export.py`): a checkpoint as a diffusers pipeline folder."""
    hydra_main("export", run, __name__, rewrite_argv)
