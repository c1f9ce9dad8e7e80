"""LoRA on difflab models: LoRA files merged in at sampling, and LoRA training with peft.

Sampling. `apply_loras(module, lora)` merges `lora=[path:0.8, path2:0.5]` (kohya / web UI or diffusers / peft
safetensors, `nets/lora.py`) into the model's UNet and text encoder weights, W' = W + w (alpha / r) up @ down, and
keeps the originals: calling it again (or with []) first restores them, so a cached model takes another set. The
applied files are `module.lora_patch.applied` (what samples.json and metrics.json record; the variant of a
comparison row becomes "<model> + <file>:<weight>").

Training (`python train.py model=lora base=<SD / SDXL folder or difflab checkpoint> data=image_text|image_folder`):
`lora_model` loads the base, freezes it, and adds peft LoRA adapters (rank r, lora_alpha) to its UNet's attention
projections (diffusers' to_q, to_k, to_v, to_out.0; difflab's qkv, proj, q, kv); only the adapters train, with the
base's own loss and scheduler. `save_lora` writes them in the web UI's format (`callbacks.LoraFile`: every checkpoint
and the end of the run, <run>/lora.safetensors), which the web UI and diffusers' `load_lora_weights` read and
`apply_loras` merges back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from difflab.conditions import TextPrompt
from difflab.errors import ConfigError, MissingFileError
from difflab.lit.checkpoint import load_module
from difflab.lit.diffusion import DiffusionModule
from difflab.lit.optim import LRSchedulerFactory, OptimizerFactory
from difflab.lit.stable_diffusion import load_stable_diffusion
from difflab.nets.lora import LoraLayer, LoraPatch, merge_loras, parse_lora_list, write_kohya
from difflab.nets.text import CLIPTextEncoder, SDXLTextEncoder

__all__ = ["apply_loras", "lora_components", "lora_label", "lora_layers", "lora_model", "save_lora"]

DIFFUSERS_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections of diffusers' UNets
DIFFLAB_TARGETS = ("qkv", "proj", "q", "kv")  # of difflab's AttentionBlock / CrossAttention


def lora_components(module: Any) -> dict[str, nn.Module]:
    """The parts a LoRA file names: "unet" (a diffusers UNet behind SDUNet / DiffusersUNet, else difflab's net),
    "text_encoder" and, for SDXL, "text_encoder_2" (the transformers text models)."""
    parts = {"unet": getattr(module.net, "unet", module.net)}
    text = getattr(module, "text_encoder", None)
    if isinstance(text, SDXLTextEncoder):
        parts.update(text_encoder=text.first.model, text_encoder_2=text.second.model)
    elif isinstance(text, CLIPTextEncoder):
        parts["text_encoder"] = text.model
    return parts


def apply_loras(module: Any, lora: Any) -> LoraPatch:
    """Merge the LoRA files of `lora` ([path:weight, ...] as given on the command line, or (path, weight) pairs)
    into `module`, after restoring any set merged before; errors name the config key `lora`."""
    pairs = parse_lora_list(lora)
    previous = getattr(module, "lora_patch", None)
    if previous is not None:
        previous.remove()
    module.lora_patch = None
    if not pairs:
        return LoraPatch()
    unet = lora_components(module)["unet"]
    config = getattr(unet, "config", None)
    layout = {}
    if config is not None and hasattr(config, "up_block_types"):  # a diffusers UNet: Stability-layout names map to it
        layout = {"layers_per_block": int(config.layers_per_block),
                  "up_attention": ["CrossAttn" in str(t) for t in config.up_block_types]}
    module.lora_patch = merge_loras(lora_components(module), pairs, **layout)
    return module.lora_patch


def lora_label(module: Any) -> str:
    """" + name:weight + ..." of the LoRAs merged into `module` (the comparison table's variant suffix); "" without."""
    patch = getattr(module, "lora_patch", None)
    return "".join(f" + {a['name']}:{a['weight']:g}" for a in (patch.applied if patch is not None else []))


def _base_module(base: str, sampler: Any, resolution: int | None, dtype: str) -> DiffusionModule:
    """A Stable Diffusion / SDXL folder or a difflab checkpoint (its EMA weights), as the model to adapt."""
    path = Path(str(base)).expanduser()
    if path.is_dir():
        return load_stable_diffusion(str(path), sampler=sampler, resolution=resolution, dtype=dtype)
    if not path.is_file():
        raise MissingFileError.for_path(path, "base", "Pass base=<a Stable Diffusion / SDXL folder in diffusers format "
                                        "or a difflab checkpoint (<run>/checkpoints/last.ckpt)>.", "LoRA base model")
    if resolution is not None or dtype != "float32":
        raise ConfigError.bad_value("model.resolution" if resolution is not None else "model.dtype",
                                    "a difflab checkpoint keeps its own image size and float32 weights",
                                    "Leave model.resolution=null and model.dtype=float32 for base=<checkpoint>.")
    return load_module(path, sampler=sampler, use_ema=True)


def _targets(unet: nn.Module, names: Sequence[str] | None) -> list[str]:
    """Full names of the modules that get adapters: those ending in `names` (default: the attention projections)."""
    wanted = tuple(names) if names else (DIFFUSERS_TARGETS if any(n.endswith(".to_q") for n, _ in unet.named_modules())
                                         else DIFFLAB_TARGETS)
    found = [n for n, m in unet.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv1d)) and any(n == w or n.endswith("." + w) for w in wanted)]
    if not found:
        raise ConfigError.bad_value("model.target_modules", f"no linear or convolution layer of the base's UNet ends "
                                    f"in {list(wanted)}", "Name layers of the network, e.g. [to_q, to_k, to_v].")
    return found


def lora_model(
    base: str,
    rank: int = 4,
    alpha: float | None = None,
    target_modules: Sequence[str] | None = None,
    optimizer: OptimizerFactory | None = None,
    lr_scheduler: LRSchedulerFactory | None = None,
    sampler: Any = None,
    caption: str | None = None,
    drop_prob: float | None = None,
    resolution: int | None = None,
    dtype: str = "float32",
) -> DiffusionModule:
    """The base model with peft LoRA adapters (rank `rank`, lora_alpha `alpha`, default the rank) on its UNet's
    `target_modules`; everything else frozen. `caption` is every image's caption for a text model trained on data
    without captions; `drop_prob` the condition dropout (classifier-free guidance; None keeps the base's)."""
    from peft import LoraConfig, inject_adapter_in_model  # reason: optional (the `sd` extra), LoRA training only

    if int(rank) < 1:
        raise ConfigError.bad_value("model.rank", f"{rank} is not a positive rank", "4 to 64 are usual.")
    module = _base_module(base, sampler, resolution, dtype)
    module.requires_grad_(False)
    unet = lora_components(module)["unet"]
    targets = _targets(unet, target_modules)
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha or rank), target_modules=targets, init_lora_weights=True)
    inject_adapter_in_model(config, unet)
    for name, param in unet.named_parameters():
        param.requires_grad_("lora_" in name)
    _set_condition(module, caption, drop_prob)
    if optimizer is not None:
        module.optimizer_factory = optimizer
    module.lr_scheduler_factory = lr_scheduler
    module.lora_base = str(base)
    return module


def _set_condition(module: DiffusionModule, caption: str | None, drop_prob: float | None) -> None:
    """The base's condition with the run's caption and dropout; errors where they mean nothing for it."""
    condition = module.condition
    if isinstance(condition, TextPrompt):
        condition.caption = caption
    elif caption is not None:
        raise ConfigError.bad_value("caption", f"the base model is {condition.describe()}, not text-conditioned",
                                    "Remove caption=... (it captions the images of a text-to-image base).")
    if drop_prob is None:
        return
    if not condition.guided and float(drop_prob) > 0:
        raise ConfigError.bad_value("model.drop_prob", f"the base model is {condition.describe()}: there is no "
                                    "condition to drop", "Leave model.drop_prob=null.")
    if not 0.0 <= float(drop_prob) < 1.0:
        raise ConfigError.bad_value("model.drop_prob", f"must be in [0, 1), got {drop_prob}",
                                    "0.1 is the usual value for classifier-free guidance; null keeps the base's.")
    condition.drop_prob = float(drop_prob)


def lora_layers(module: Any) -> list[LoraLayer]:
    """The trained peft adapters of `module` as `LoraLayer`s (down = lora_A, up = lora_B, alpha = lora_alpha)."""
    out = []
    for component, part in lora_components(module).items():
        for name, layer in part.named_modules():
            a, b = getattr(layer, "lora_A", None), getattr(layer, "lora_B", None)
            if isinstance(a, nn.ModuleDict) and "default" in a:
                out.append(LoraLayer(component, name, a["default"].weight, b["default"].weight,
                                     float(layer.lora_alpha["default"])))
    return out


def base_version(module: Any) -> str:
    """The kohya metadata name of the base ("sd_v1", "sd_v2", "sdxl_base_v1-0"), or "difflab" for difflab nets."""
    if isinstance(getattr(module, "text_encoder", None), SDXLTextEncoder):
        return "sdxl_base_v1-0"
    unet = lora_components(module)["unet"]
    if hasattr(unet, "config") and hasattr(unet.config, "cross_attention_dim"):
        return "sd_v2" if int(unet.config.cross_attention_dim) == 1024 else "sd_v1"
    return "difflab"


def save_lora(module: Any, path: str | Path) -> Path:
    """The trained adapters of `module` as a web UI (kohya) LoRA file at `path`, with kohya's metadata."""
    layers = lora_layers(module)
    if not layers:
        raise ValueError("the model has no LoRA adapters to save (it was not built by lora_model)")
    rank, alpha = layers[0].down.shape[0], layers[0].alpha
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": rank, "ss_network_alpha": alpha,
                "ss_base_model_version": base_version(module), "difflab_base": getattr(module, "lora_base", "")}
    return write_kohya(path, layers, metadata)
