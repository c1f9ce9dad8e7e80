"""A difflab model as a diffusers pipeline folder: what `DiffusionModel.export` and `python export.py` write.

The folder loads offline with `DDPMPipeline.from_pretrained(<folder>)` (`LDMPipeline` for latent models) and
`UNet2DModel.from_pretrained(<folder>, subfolder="unet")`; difflab loads it back with `model=diffusers
pipeline.path=<folder>`. Beside the diffusers files: `difflab.json` (condition, guidance, source run), `samples.png`
(`card.n` images with the configured sampler) and the model card `README.md`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from difflab.conditions import INPUT_KEYS
from difflab.evaluation.image_record import image_parameters
from difflab.lit.pipelines import export_pipeline, metadata
from difflab.utils.images import save_grid
from difflab.utils.model_card import write_card

log = logging.getLogger(__name__)

def sample_grid(module: Any, spec: Any, n: int, seed: int, path: Path) -> Path | None:
    """`n` images of the model (classes cycled for class-conditional models) as one PNG grid; None for n = 0."""
    if n == 0:
        return None
    condition = module.condition
    requests = condition.parse({key: None for key in INPUT_KEYS}, n)
    images, _ = module.generate(n, seed=seed, sampler=spec, cond=condition.to_net(requests.values))
    rows = condition.rows(requests)
    info = image_parameters(module, seed=seed, index=0, sampler=spec, row=rows[0] if rows else None,
                            extra={"Grid": f"{n} images"})
    return save_grid(images, path, parameters=info)


def export(module: Any, out: Path, *, sampler: Any = None, card_n: int = 16, card_seed: int = 0,
           use_ema: bool = True, ckpt: Path | None = None) -> dict[str, Any]:
    """Write `module` into the (checked, empty) folder `out` as a diffusers pipeline with its difflab.json, a grid
    of `card_n` samples (the `sampler`, seed `card_seed`) and the model card; returns the files written."""
    card = {"n": int(card_n), "seed": int(card_seed), "sampler": module.sampling_spec(sampler).record()}
    extra = {"source_checkpoint": str(ckpt) if ckpt is not None else None, "use_ema": bool(use_ema), "card": card}
    export_pipeline(module, out, extra)
    grid = sample_grid(module, sampler, card["n"], card["seed"], out / "samples.png")
    latent = not type(module.autoencoder).__name__.startswith("Identity")
    params = sum(p.numel() for p in module.net.parameters())
    readme = write_card(out, run_config=module.run_config or {}, meta={**metadata(module), **extra},
                        pipeline="LDMPipeline" if latent else "DDPMPipeline", ckpt=ckpt, grid=grid, unet_params=params)
    log.info("wrote the diffusers pipeline %s (model card %s)", out, readme)
    return {"out": out, "readme": readme, "grid": grid}
