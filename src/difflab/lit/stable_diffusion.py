"""Stable Diffusion checkpoints (diffusers folder layout) as a difflab `TextDiffusionModule`.

    <folder>/unet, vae, text_encoder, tokenizer, scheduler/scheduler_config.json   (model_index.json)

The UNet becomes `SDUNet`, the VAE the latent autoencoder (`DiffusersLatent`, its scaling_factor), the
text encoder `CLIPTextEncoder` (prompt weighting), and the scheduler config a `DiscreteVPScheduler` with
the same betas, prediction type and timestep spacing (`grid`, `steps_offset`), so that every difflab
sampler and guidance option drives the model.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch

from difflab.conditions import TextPrompt
from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.schedules import DiscreteVPScheduler
from difflab.errors import ConfigError
from difflab.lit.text import TextDiffusionModule
from difflab.nets.autoencoder import DiffusersLatent
from difflab.nets.sd import SDUNet
from difflab.nets.text import (
    CLIPTextEncoder,
    PretrainedNotFoundError,
    resolve_pretrained,
)
from difflab.samplers.generate import SamplerSpec

KEY = "pipeline.path"
EXAMPLE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


def pipeline_folder(path: str, parts: tuple[str, ...], what: str, example: str, how: str) -> Path:
    """A diffusers pipeline folder (or Hub name in the cache) checked for every part it needs (sub-folders or
    files); one clear error naming the folder, what it lacks, the config key and `how` to get one."""
    root = resolve_pretrained(path, KEY, what, example)
    missing = [p for p in parts if not (root / p).exists()]
    if missing:
        lacks = ", ".join(f"{m}/" if "." not in m else m for m in missing)
        raise PretrainedNotFoundError(f"'{root}' is not a {what} in diffusers format (config key `{KEY}`): it lacks "
                                      f"{lacks}. {how}")
    return root


def sd_folder(path: str) -> Path:
    """The Stable Diffusion folder, checked for every component; one clear error naming the folder and the fix."""
    root = resolve_pretrained(path, KEY, "Stable Diffusion checkpoint", EXAMPLE)
    unet_only = (root / "unet").is_dir() and not (root / "text_encoder").is_dir()
    return pipeline_folder(
        path, PARTS, "Stable Diffusion checkpoint", EXAMPLE,
        ("A DDPM/DDIM pipeline folder (a UNet2DModel without text encoder) loads with model=diffusers "
         "pipeline.path=<folder>. " if unet_only else "")
        + f"Get one on a machine with internet with `huggingface-cli download {EXAMPLE}` (then pipeline.path="
        f"{EXAMPLE}) or `StableDiffusionPipeline.from_pretrained(...).save_pretrained(<folder>)`, and copy it here.")


def sd_scheduler(config: dict[str, Any], **overrides: Any) -> DiscreteVPScheduler:
    """The `DiscreteVPScheduler` of a diffusers scheduler config (betas, prediction, spacing, offset), then overrides."""
    betas = config.get("beta_schedule", "linear")
    if betas not in BETAS or config.get("trained_betas") is not None:
        raise ValueError(f"unsupported beta schedule {betas!r} in the checkpoint's scheduler config")
    spacing = config.get("timestep_spacing", "leading")
    kwargs = {
        "betas": BETAS[betas], "num_train_timesteps": int(config.get("num_train_timesteps", 1000)),
        "beta_start": float(config.get("beta_start", 0.00085)), "beta_end": float(config.get("beta_end", 0.012)),
        "prediction": PREDICTIONS[config.get("prediction_type", "epsilon")],
        "grid": spacing if spacing in ("leading", "trailing", "linspace") else "leading",
        "steps_offset": int(config.get("steps_offset", 0)),
    }
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return DiscreteVPScheduler(**kwargs)


def diffusers_scheduler_config(scheduler: Any) -> dict[str, Any]:
    """The diffusers scheduler config of a difflab `DiscreteVPScheduler` (the inverse of `sd_scheduler`): betas,
    training timesteps, prediction type, timestep spacing and offset; a ConfigError for other schedules."""
    names = {v: k for k, v in BETAS.items()}
    if not isinstance(scheduler, DiscreteVPScheduler) or scheduler.betas_kind not in names:
        raise ConfigError.bad_value("scheduler", f"{scheduler!r} has no diffusers DDPMScheduler equivalent",
                                    "Only models trained on a discrete DDPM schedule (scheduler=ddpm_linear or "
                                    "ddpm_cosine) export to a diffusers pipeline.")
    return {
        "num_train_timesteps": scheduler.num_train_timesteps, "beta_schedule": names[scheduler.betas_kind],
        "beta_start": scheduler.beta_start, "beta_end": scheduler.beta_end, "trained_betas": None,
        "prediction_type": {v: k for k, v in PREDICTIONS.items()}[scheduler.prediction],
        "timestep_spacing": scheduler.grid if scheduler.grid in ("leading", "trailing", "linspace") else "leading",
        "steps_offset": scheduler.steps_offset, "variance_type": "fixed_small",
    }


def load_stable_diffusion(
    path: str,
    sampler: SamplerSpec | None = None,
    guidance_scale: float = 7.5,
    guidance_rescale: float = 0.0,
    resolution: int | None = None,
    scheduler_overrides: dict[str, Any] | None = None,
    dtype: str = "float32",
    weighting: bool = True,
) -> TextDiffusionModule:
    """A Stable Diffusion folder (or Hub name in the cache) as a `TextDiffusionModule` in eval mode, on CPU.

    `resolution` (default: the UNet's sample_size times the VAE's factor, 512 for SD 1.x) is the image size;
    `dtype` (float32 | float16 | bfloat16) the weights' dtype; `scheduler_overrides` e.g. {"grid": "karras"}.
    """
    try:
        from diffusers import (  # an optional dependency (the `sd` extra), imported where it is used
            AutoencoderKL,
            UNet2DConditionModel,
        )
    except ImportError as err:
        raise PretrainedNotFoundError("model=sd needs diffusers: pip install -e '.[sd]' (or pip install diffusers)") from err

    root = sd_folder(path)
    torch_dtype = getattr(torch, dtype)
    try:
        unet = UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=torch_dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError) as err:
        raise PretrainedNotFoundError(f"cannot load the UNet/VAE of '{root}' (config key `{KEY}`): {err}") from None
    text = CLIPTextEncoder.from_pretrained(str(root), key=KEY, weighting=weighting)
    config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    scheduler = sd_scheduler(config, **(scheduler_overrides or {}))
    autoencoder = DiffusersLatent(vae)
    size = int(resolution or unet.config.sample_size * autoencoder.downsample_factor)
    module = TextDiffusionModule(
        SDUNet(unet), scheduler, DiffusionLoss(), partial(torch.optim.AdamW, lr=1e-5), image_shape=(3, size, size),
        sampler=sampler or SamplerSpec("dpmpp_2m", steps=30), guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale, text_encoder=text, autoencoder=autoencoder,
        condition=TextPrompt(drop_prob=0.0))
    module.run_config = {"model": {"path": str(path)}, "choices": {"model": "sd"}, "data": {"name": "prompts"}}
    return module.eval()
