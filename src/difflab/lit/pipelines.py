"""diffusers pipeline folders of `UNet2DModel`s, both ways: a difflab model as a DDPM (or latent) pipeline, and a
DDPM/DDIM pipeline as a difflab model.

    <folder>/model_index.json, unet/ (config.json + diffusion_pytorch_model.safetensors), scheduler/,
             vqvae/ (latent models: an AutoencoderKL; `LDMPipeline`), difflab.json (what diffusers has no field for)

Export (`export_pipeline`): difflab's UNet becomes a `UNet2DModel` with the same function (`nets/diffusers_map.py`),
the `DiscreteVPScheduler` a `DDPMScheduler` config with the same betas, prediction type and timesteps, and a
pretrained diffusers first stage its `AutoencoderKL` (its scale factor as `scaling_factor`). Import
(`load_diffusers_pipeline`, `model=diffusers`): the folder's UNet behind `DiffusersUNet` and its scheduler config
as a `DiscreteVPScheduler` (`stable_diffusion.sd_scheduler`), so every difflab sampler, evaluate.py and train.py
(fine-tuning) drive it.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch

from difflab.conditions import ClassLabel
from difflab.diffusion.losses import DiffusionLoss
from difflab.errors import ConfigError, CorruptFileError, IncompatibleCheckpointError
from difflab.lit.diffusion import DiffusionModule
from difflab.lit.stable_diffusion import (
    KEY,
    diffusers_scheduler_config,
    pipeline_folder,
    sd_scheduler,
)
from difflab.nets.autoencoder import DiffusersLatent, IdentityFirstStage, KLLatent
from difflab.nets.diffusers_map import convert_state, unet2d_config, weight_table
from difflab.nets.sd import DiffusersUNet
from difflab.nets.text import PretrainedNotFoundError
from difflab.samplers.generate import SamplerSpec
from difflab.utils.files import write_json

EXAMPLE = "google/ddpm-cifar10-32"
METADATA = "difflab.json"
PARTS = ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")
HOW = (f"Save one with `DDPMPipeline.save_pretrained(<folder>)`, export a difflab checkpoint with `python export.py "
       f"ckpt=<checkpoint> out=<folder>`, or get one on a machine with internet (`huggingface-cli download {EXAMPLE}`).")


def diffusers_unet(module: DiffusionModule) -> Any:
    """The module's network as a diffusers `UNet2DModel` computing the same function (weights copied)."""
    from diffusers import UNet2DModel  # an optional dependency (the `sd` extra)

    if isinstance(module.net, DiffusersUNet):  # imported from diffusers (and maybe fine-tuned): already one
        return module.net.unet
    net_cfg = ((module.run_config or {}).get("model") or {}).get("net") or {}
    c, h, w = module.latent_shape
    config = unet2d_config(module.net, net_cfg, h if h == w else (h, w))
    unet = UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    unet.load_state_dict(convert_state(module.net.state_dict(), weight_table(module.net)), strict=True)
    return unet.eval()


def diffusers_vae(module: DiffusionModule) -> Any | None:
    """The first stage as a diffusers `AutoencoderKL` (its scale factor as `scaling_factor`); None in pixel space."""
    first = module.autoencoder
    if isinstance(first, IdentityFirstStage):
        return None
    if isinstance(first, KLLatent):
        raise ConfigError.bad_value(
            "model.autoencoder", "difflab's KL autoencoder does not map onto diffusers' AutoencoderKL: its encoder "
            "downsamples with a stride-2 convolution padded by 1 on every side, where AutoencoderKL pads (0, 1, 0, 1), "
            "so the same weights would encode differently", "Export latent models trained on a pretrained diffusers "
            "autoencoder (model/autoencoder=pretrained), or pixel models.")
    if not isinstance(first, DiffusersLatent) or float(first.shift_factor) != 0.0:
        raise ConfigError.bad_value("model.autoencoder", f"{type(first).__name__} (shift_factor "
                                    f"{float(getattr(first, 'shift_factor', 0.0))}) has no LDMPipeline equivalent",
                                    "Export pixel models or latent models on an AutoencoderKL without shift_factor.")
    first.vae.register_to_config(scaling_factor=float(first.scale_factor))
    return first.vae


def _scheduler(module: DiffusionModule, cls: Any) -> Any:
    """The diffusers scheduler of the module's training schedule; its betas are checked against difflab's."""
    config = diffusers_scheduler_config(module.scheduler)
    scheduler = cls.from_config({**config, "clip_sample": isinstance(module.autoencoder, IdentityFirstStage)})
    if not torch.allclose(scheduler.betas.double(), module.scheduler.betas, atol=1e-7):
        raise ConfigError.bad_value("scheduler.cosine_s", "the betas differ from diffusers' squaredcos_cap_v2 "
                                    "(s = 0.008)", "Only the standard cosine schedule exports.")
    return scheduler


def metadata(module: DiffusionModule) -> dict[str, Any]:
    """What difflab.json records beside the diffusers files: the condition, guidance and the source run."""
    condition = module.condition
    return {
        "format": 1, "image_shape": list(module.image_shape),
        "condition": {"kind": condition.kind, **({"num_classes": condition.num_classes} if isinstance(condition, ClassLabel) else {})},
        "guidance_scale": module.guidance_scale, "sampler": module.sampling_spec().record(),
        "global_step": int(getattr(module, "checkpoint_global_step", 0)),
        "train_images_seen": int(getattr(module, "train_images_seen", 0)),
    }


def export_pipeline(module: DiffusionModule, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `module` as a diffusers pipeline folder (safetensors): DDPMPipeline in pixel space, LDMPipeline
    (unet, vqvae = AutoencoderKL, DDIM scheduler) for latent models; returns the folder."""
    from diffusers import (  # an optional dependency (the `sd` extra), imported where it is used
        DDIMScheduler,
        DDPMPipeline,
        DDPMScheduler,
        LDMPipeline,
    )

    vae = diffusers_vae(module)
    unet = diffusers_unet(module)
    if vae is None:
        pipe = DDPMPipeline(unet=unet, scheduler=_scheduler(module, DDPMScheduler))
    else:
        pipe = LDMPipeline(vqvae=vae, unet=unet, scheduler=_scheduler(module, DDIMScheduler))
    pipe.save_pretrained(out, safe_serialization=True)
    write_json(out / METADATA, {**metadata(module), **(extra or {})})
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON file of the pipeline folder; a corrupt one is a UserError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptFileError.for_file(path, f"it is not the {what} JSON ({err})", HOW) from None


def _first_stage(root: Path, index: dict[str, Any], dtype: torch.dtype) -> DiffusersLatent | None:
    """The pipeline's autoencoder (`vqvae` or `vae`) as difflab's latent first stage; None for pixel pipelines."""
    name = next((k for k in ("vqvae", "vae") if k in index), None)
    if name is None:
        return None
    kind = index[name][1] if isinstance(index[name], list) else index[name]
    if kind != "AutoencoderKL":
        raise PretrainedNotFoundError(f"'{root}' decodes with a {kind} ({name}/), which difflab does not load "
                                      f"(config key `{KEY}`): only AutoencoderKL first stages are supported.")
    from diffusers import (
        AutoencoderKL,  # an optional dependency (the `sd` extra), imported where it is used
    )

    return DiffusersLatent(AutoencoderKL.from_pretrained(root / name, torch_dtype=dtype, local_files_only=True))


def load_diffusers_pipeline(
    path: str,
    sampler: SamplerSpec | None = None,
    scheduler_overrides: dict[str, Any] | None = None,
    optimizer: Any = None,
    lr_scheduler: Any = None,
    loss: DiffusionLoss | None = None,
    guidance_scale: float | None = None,
    condition_drop_prob: float = 0.1,
    dtype: str = "float32",
) -> DiffusionModule:
    """A diffusers DDPM/DDIM (or LDM) pipeline folder of a `UNet2DModel` as a `DiffusionModule`, on CPU.

    `optimizer` / `lr_scheduler` / `loss` are used when it is fine-tuned (train.py); `condition_drop_prob` is the
    label dropout of a class-conditional UNet's fine-tuning."""
    try:
        from diffusers import (
            UNet2DModel,  # an optional dependency (the `sd` extra), imported where it is used
        )
    except ImportError as err:
        raise PretrainedNotFoundError("model=diffusers needs diffusers: pip install diffusers") from err

    root = pipeline_folder(path, PARTS, "UNet2DModel pipeline", EXAMPLE, HOW)
    index = _read_json(root / "model_index.json", "pipeline index (model_index.json)")
    unet_class = _read_json(root / "unet" / "config.json", "UNet config").get("_class_name")
    if unet_class != "UNet2DModel":
        hint = " It is a Stable Diffusion folder: use model=sd." if unet_class == "UNet2DConditionModel" else ""
        raise IncompatibleCheckpointError(f"'{root}/unet' holds a {unet_class}, not a UNet2DModel (config key "
                                          f"`{KEY}`, model=diffusers).{hint}")
    torch_dtype = getattr(torch, dtype)
    try:
        unet = UNet2DModel.from_pretrained(root / "unet", torch_dtype=torch_dtype, local_files_only=True)
        first = _first_stage(root, index, torch_dtype)
    except (OSError, ValueError) as err:
        raise PretrainedNotFoundError(f"cannot load the UNet/VAE of '{root}' (config key `{KEY}`): {err}. {HOW}") from None
    scheduler = sd_scheduler(_read_json(root / "scheduler" / "scheduler_config.json", "scheduler config"),
                             **(scheduler_overrides or {}))
    meta = _read_json(root / METADATA, "difflab metadata") if (root / METADATA).is_file() else {}
    net = DiffusersUNet(unet)
    condition = ClassLabel(net.null_index, condition_drop_prob) if net.conditional else None
    size = int(unet.config.sample_size) * (first.downsample_factor if first is not None else 1)
    channels = first.vae.config.in_channels if first is not None else unet.config.in_channels
    module = DiffusionModule(
        net, scheduler, loss or DiffusionLoss(), optimizer or partial(torch.optim.AdamW, lr=1e-5),
        image_shape=meta.get("image_shape") or (channels, size, size), lr_scheduler=lr_scheduler,
        sampler=sampler or SamplerSpec("ddim", steps=50), condition=condition,
        guidance_scale=guidance_scale if guidance_scale is not None else float(meta.get("guidance_scale", 1.0)),
        autoencoder=first)
    module.run_config = {"model": {"path": str(path)}, "choices": {"model": "diffusers"}, "data": {}}
    return module.train()  # for fine-tuning (from_pretrained gives eval mode); sampling switches to eval itself
