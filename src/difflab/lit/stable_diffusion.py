"""Stable Diffusion checkpoints (diffusers folder layout) as a difflab `TextDiffusionModule`: SD 1.x / 2.x and SDXL.

    <folder>/unet, vae, text_encoder, tokenizer, scheduler/scheduler_config.json   (model_index.json)
    SDXL (model_index.json names a StableDiffusionXL pipeline): also text_encoder_2, tokenizer_2

The UNet becomes `SDUNet`, the VAE the latent autoencoder (`DiffusersLatent`, its scaling_factor), the
text encoder `CLIPTextEncoder` (the prompt language of `nets/prompts.py`) or, for SDXL, `SDXLTextEncoder` (both
encoders' penultimate states, the pooled projection, and the size ids from `original_size`, `crop_coords`,
`target_size`; the null prompt all zeros when the pipeline sets `force_zeros_for_empty_prompt`, as diffusers'
`StableDiffusionXLPipeline` without a negative prompt), and the scheduler config a `DiscreteVPScheduler` with
the same betas, prediction type and timestep spacing (`grid`, `steps_offset`), so that every difflab
sampler and guidance option drives the model.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from difflab.conditions import TextPrompt
from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.schedules import DiscreteVPScheduler
from difflab.errors import ConfigError
from difflab.lit.text import TextDiffusionModule
from difflab.nets.autoencoder import DiffusersLatent
from difflab.nets.sd import SDUNet
from difflab.nets.text import CLIPTextEncoder, PretrainedNotFoundError, SDXLTextEncoder, resolve_pretrained
from difflab.samplers.generate import SamplerSpec

KEY = "pipeline.path"
EXAMPLE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
XL_EXAMPLE = "stabilityai/stable-diffusion-xl-base-1.0"
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
XL_PARTS = (*PARTS[:4], "text_encoder_2", "tokenizer_2", "scheduler")
SIZE_KEYS = ("original_size", "crop_coords", "target_size")  # SDXL's size conditioning, pipeline.<key>
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


def is_sdxl(root: Path) -> bool:
    """Whether a pipeline folder holds SDXL: its model_index.json names an SDXL pipeline (without one: a
    text_encoder_2/ folder); an SDXL refiner (no first text encoder) is a clear error."""
    index = root / "model_index.json"
    config = json.loads(index.read_text()) if index.is_file() else {}
    xl = "XL" in str(config.get("_class_name", "")) if config else (root / "text_encoder_2").is_dir()
    if xl and config and (config.get("text_encoder") or [None])[0] is None:
        raise PretrainedNotFoundError(f"'{root}' is an SDXL refiner (no first text encoder; config key `{KEY}`): "
                                      "difflab samples SDXL base folders (stabilityai/stable-diffusion-xl-base-1.0).")
    return xl


def sd_folder(path: str) -> tuple[Path, bool]:
    """The Stable Diffusion folder, checked for every component, and whether it is SDXL; one clear error naming the
    folder, what it lacks and the fix."""
    root = resolve_pretrained(path, KEY, "Stable Diffusion checkpoint", EXAMPLE)
    unet_only = (root / "unet").is_dir() and not (root / "text_encoder").is_dir()
    xl = is_sdxl(root)
    root = pipeline_folder(
        path, XL_PARTS if xl else PARTS, "SDXL checkpoint" if xl else "Stable Diffusion checkpoint", EXAMPLE,
        ("A DDPM/DDIM pipeline folder (a UNet2DModel without text encoder) loads with model=diffusers "
         "pipeline.path=<folder>. " if unet_only and not xl else "")
        + f"Get one on a machine with internet with `huggingface-cli download {XL_EXAMPLE if xl else EXAMPLE}` (then "
        f"pipeline.path=<that name>) or `{'StableDiffusionXLPipeline' if xl else 'StableDiffusionPipeline'}"
        ".from_pretrained(...).save_pretrained(<folder>)`, and copy it here.")
    return root, xl


def size_ids(resolution: int, original_size: Any = None, crop_coords: Any = None, target_size: Any = None) -> list[float]:
    """SDXL's time ids: original size (h, w), crop top-left (top, left), target size (h, w); the defaults are the
    image size, (0, 0) and the image size, as in diffusers. A size is one number (a square) or [h, w]."""
    def pair(value: Any, key: str, default: tuple[int, int], least: int) -> list[float]:
        if value is None:
            return [float(v) for v in default]
        items = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value, value]
        try:
            numbers = [float(v) for v in items]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 2 or min(numbers) < least:
            raise ConfigError.bad_value(f"pipeline.{key}", f"{value!r} is not two numbers >= {least}",
                                        f"Pass pipeline.{key}=[<height>,<width>] (or one number for a square).")
        return numbers

    size = (resolution, resolution)
    return (pair(original_size, "original_size", size, 1) + pair(crop_coords, "crop_coords", (0, 0), 0)
            + pair(target_size, "target_size", size, 1))


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
    original_size: Any = None,
    crop_coords: Any = None,
    target_size: Any = None,
) -> TextDiffusionModule:
    """A Stable Diffusion or SDXL folder (or Hub name in the cache) as a `TextDiffusionModule` in eval mode, on CPU.

    `resolution` (default: the UNet's sample_size times the VAE's factor: 512 for SD 1.x, 1024 for SDXL) is the
    image size; `dtype` (float32 | float16 | bfloat16) the weights' dtype; `scheduler_overrides` e.g.
    {"grid": "karras"}; `original_size`, `crop_coords`, `target_size` SDXL's size conditioning (`size_ids`).
    """
    try:
        from diffusers import AutoencoderKL, UNet2DConditionModel  # an optional dependency (the `sd` extra)
    except ImportError as err:
        raise PretrainedNotFoundError("model=sd needs diffusers: pip install -e '.[sd]' (or pip install diffusers)") from err

    root, xl = sd_folder(path)
    given = [k for k, v in zip(SIZE_KEYS, (original_size, crop_coords, target_size)) if v is not None]
    if given and not xl:
        raise ConfigError.bad_value(f"pipeline.{given[0]}", f"'{root}' is SD 1.x/2.x, which has no size conditioning",
                                    "Only SDXL folders take pipeline.original_size, crop_coords and target_size; "
                                    "remove it.")
    torch_dtype = getattr(torch, dtype)
    try:
        unet = UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=torch_dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=torch_dtype, local_files_only=True)
    except (OSError, ValueError) as err:
        raise PretrainedNotFoundError(f"cannot load the UNet/VAE of '{root}' (config key `{KEY}`): {err}") from None
    if torch_dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae = vae.float()  # SDXL's VAE overflows in float16 (diffusers upcasts it too)
    if unet.config.in_channels != vae.config.latent_channels:
        raise PretrainedNotFoundError(f"'{root}' has a UNet of {unet.config.in_channels} input channels for "
                                      f"{vae.config.latent_channels} latent channels (an inpainting UNet?; config key "
                                      f"`{KEY}`): difflab inpaints with the base model (mode=inpaint).")
    autoencoder = DiffusersLatent(vae)
    size = int(resolution or unet.config.sample_size * autoencoder.downsample_factor)
    text = _text_encoder(root, xl, weighting, size_ids(size, original_size, crop_coords, target_size) if xl else None)
    config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    scheduler = sd_scheduler(config, **(scheduler_overrides or {}))
    module = TextDiffusionModule(
        SDUNet(unet), scheduler, DiffusionLoss(), partial(torch.optim.AdamW, lr=1e-5), image_shape=(3, size, size),
        sampler=sampler or SamplerSpec("dpmpp_2m", steps=30), guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale, text_encoder=text, autoencoder=autoencoder,
        condition=TextPrompt(drop_prob=0.0))
    module.run_config = {"model": {"path": str(path)}, "choices": {"model": "sdxl" if xl else "sd"},
                         "data": {"name": "prompts"}}
    return module.eval()


def _text_encoder(root: Path, xl: bool, weighting: bool, time_ids: list[float] | None) -> CLIPTextEncoder | SDXLTextEncoder:
    """SD's CLIP text encoder, or SDXL's pair (penultimate layers) with its size ids and null prompt."""
    if not xl:
        return CLIPTextEncoder.from_pretrained(str(root), key=KEY, weighting=weighting)
    first = CLIPTextEncoder.from_pretrained(str(root), key=KEY, weighting=weighting, layer=-2)
    second = CLIPTextEncoder.from_pretrained(str(root), key=KEY, weighting=weighting, layer=-2, suffix="_2",
                                             projection=True)
    zeros = json.loads((root / "model_index.json").read_text()).get("force_zeros_for_empty_prompt", True) \
        if (root / "model_index.json").is_file() else True
    assert time_ids is not None
    return SDXLTextEncoder(first, second, time_ids, zero_null=bool(zeros))
