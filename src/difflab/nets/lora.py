"""LoRA files (Hu et al. 2022, "LoRA: Low-Rank Adaptation") read and merged into a model's weights at sampling.

    W' = W + weight * (alpha / r) * up @ down        up [out, r], down [r, in] (convolutions: flattened, eq. (3))

Formats read (safetensors), both normalised to (component, module name, down, up, alpha):

    kohya / web UI    lora_unet_<module, dots as _>.lora_down.weight / .lora_up.weight / .alpha
                      lora_te_ (SD 1.x / 2.x text encoder), lora_te1_ / lora_te2_ (SDXL's two); SDXL UNet modules in
                      Stability's layout (input_blocks_4_1_...) are mapped to diffusers' (`sgm_to_diffusers`)
    diffusers / peft  unet.<module>.lora_A.weight / .lora_B.weight (text_encoder., text_encoder_2.), also .lora.down /
                      .lora.up and .lora_linear_layer.down / .up; `<module>.alpha` when present, else the rank (the
                      scale 1 diffusers assumes), or lora_alpha from the file's `lora_adapter_metadata`

Components are named "unet", "text_encoder", "text_encoder_2". `write_kohya` writes the web UI's format, which the
web UI and diffusers' `load_lora_weights` read. Every layer of a file must find its module with the right shape:
a layer that does not is an `IncompatibleCheckpointError` (a LoRA made for another base model); LyCORIS layers
(LoHa, LoKr, full diffs) are refused by name. Mistakes name the config key `lora`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.errors import ConfigError, CorruptFileError, IncompatibleCheckpointError, MissingFileError

__all__ = ["LoraLayer", "LoraPatch", "merge_loras", "parse_lora_list", "read_lora", "sgm_to_diffusers", "write_kohya"]

KEY = "lora"
KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2",
                  "lora_te_": "text_encoder"}
DIFFUSERS_PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder", "text_encoder_2.": "text_encoder_2",
                      "te1.": "text_encoder", "te2.": "text_encoder_2", "base_model.model.": "unet"}
KOHYA_OUT = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}  # te1 beside te2
_PARTS = re.compile(r"^(?P<module>.+?)\.(?:(?P<down>lora_down|lora_A|lora\.down|lora_linear_layer\.down)"
                    r"|(?P<up>lora_up|lora_B|lora\.up|lora_linear_layer\.up))(?:\.default)?\.weight$")
_OLD_PARTS = re.compile(r"^(?P<module>.+?)(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$")
_OLD_NAMES = {"unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},  # diffusers' old
              "text": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}}  # attn processors
_LYCORIS = ("hada_", "lokr_", ".diff", "dora_scale", "lora_mid")


@dataclass
class LoraLayer:
    """One module's low-rank update: down [r, in, ...], up [out, r, ...], alpha (None: the rank, scale 1)."""

    component: str
    module: str
    down: Tensor | None = None
    up: Tensor | None = None
    alpha: float | None = None

    def delta(self, shape: torch.Size) -> Tensor:
        """(alpha / r) * up @ down as a float32 weight of `shape`."""
        assert self.down is not None and self.up is not None
        rank = self.down.shape[0]
        update = self.up.float().flatten(1) @ self.down.float().flatten(1)  # (out, in * k * k)
        return update.reshape(shape) * ((self.alpha if self.alpha is not None else rank) / rank)


def parse_lora_list(value: Any) -> list[tuple[str, float]]:
    """`lora=[path:0.8, path2]` (weight 1 when left out; also (path, weight) pairs or {path, weight} maps) as
    [(path, weight)]; None or [] is no LoRA."""
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, (str, Mapping)) else list(value)
    out = []
    for item in items:
        if isinstance(item, Mapping):
            path, weight = item.get("path"), item.get("weight", 1.0)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            path, weight = item
        else:
            path, sep, tail = str(item).rpartition(":")
            try:
                weight = float(tail) if sep and path else None
            except ValueError:
                weight = None
            if weight is None:
                path, weight = str(item), 1.0
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not path or not math.isfinite(weight):
            raise ConfigError.bad_value(KEY, f"{item!r} is not a LoRA file with a weight",
                                        "Pass lora=[<file.safetensors>:<weight>, ...], e.g. lora=[style.safetensors:0.8].")
        out.append((str(path), weight))
    return out


def _component_and_module(stem: str) -> tuple[str, str] | None:
    """(component, module name) of a key's stem, or None when it names no component."""
    for prefix, component in {**KOHYA_PREFIXES, **DIFFUSERS_PREFIXES}.items():
        if stem.startswith(prefix):
            return component, stem[len(prefix):]
    return None


def _split_key(key: str) -> tuple[str, str] | None:
    """(stem, "down" | "up" | "alpha") of a LoRA tensor's key, or None."""
    if key.endswith(".alpha"):
        return key[: -len(".alpha")], "alpha"
    match = _PARTS.match(key)
    if match is not None:
        return match.group("module"), "down" if match.group("down") else "up"
    old = _OLD_PARTS.match(key)
    if old is None:
        return None
    names = _OLD_NAMES["unet" if key.startswith("unet.") else "text"]
    return f"{old.group('module')}.{names[old.group('proj')]}", old.group("part")


def read_lora(path: str | Path) -> tuple[list[LoraLayer], dict[str, str]]:
    """The layers of a LoRA file (kohya / web UI or diffusers / peft) and its metadata; clear errors for a missing,
    unreadable or LyCORIS file, all naming the config key `lora`."""
    from safetensors import SafetensorError, safe_open  # reason: optional in principle; ships with transformers

    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise MissingFileError.for_path(file, KEY, "Pass lora=[<file.safetensors>:<weight>] with an existing LoRA file "
                                        "(kohya / web UI or diffusers format; python train.py model=lora writes one).",
                                        "LoRA file")
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFileError.for_file(file, f"not a safetensors LoRA file ({err}; config key `{KEY}`)",
                                        "LoRA files are .safetensors (kohya / web UI or diffusers format).") from None
    lycoris = next((k for k in tensors if any(tag in k for tag in _LYCORIS)), None)
    if lycoris is not None:
        raise IncompatibleCheckpointError(f"'{file}' (config key `{KEY}`) holds LyCORIS layers (e.g. {lycoris}: LoHa, "
                                          "LoKr, DoRA or full diffs), which difflab does not apply; use a plain LoRA.")
    default_alpha = _metadata_alpha(metadata)
    layers: dict[str, LoraLayer] = {}
    for key, value in tensors.items():
        split = _split_key(key)
        found = None if split is None else _component_and_module(split[0])
        if split is None or found is None:
            raise IncompatibleCheckpointError(f"'{file}' (config key `{KEY}`) has the tensor {key!r}, which is not a "
                                              "LoRA layer of a known format (kohya / web UI lora_unet_..., diffusers "
                                              "unet....lora_A.weight).")
        stem, part = split
        layer = layers.setdefault(stem, LoraLayer(found[0], found[1]))
        if part == "alpha":
            layer.alpha = float(value)
        else:
            setattr(layer, part, value)
    for layer in layers.values():
        if layer.alpha is None and default_alpha is not None and layer.down is not None:
            layer.alpha = default_alpha * layer.down.shape[0]
        if layer.down is None or layer.up is None:
            raise IncompatibleCheckpointError(f"'{file}' (config key `{KEY}`) has a LoRA layer {layer.module!r} "
                                              "without its down or up matrix: the file is incomplete.")
    return list(layers.values()), metadata


def _metadata_alpha(metadata: Mapping[str, str]) -> float | None:
    """lora_alpha / r from diffusers' `lora_adapter_metadata` (one adapter config), else None."""
    raw = metadata.get("lora_adapter_metadata")
    try:
        config = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    config = next(iter(config.values())) if isinstance(config, dict) and "r" not in config and config else config
    if isinstance(config, dict) and config.get("r") and config.get("lora_alpha"):
        return float(config["lora_alpha"]) / float(config["r"])
    return None


# SDXL files of kohya's trainer name UNet modules in Stability's (SGM) layout; diffusers' names of the same modules:
_RESNET_PARTS = {"in_layers_0": "norm1", "in_layers_2": "conv1", "emb_layers_1": "time_emb_proj",
                 "out_layers_0": "norm2", "out_layers_3": "conv2", "skip_connection": "conv_shortcut", "op": "conv"}
_TOP = {"time_embed_0": "time_embedding_linear_1", "time_embed_2": "time_embedding_linear_2",
        "label_emb_0_0": "add_embedding_linear_1", "label_emb_0_2": "add_embedding_linear_2",
        "input_blocks_0_0": "conv_in", "out_0": "conv_norm_out", "out_2": "conv_out"}


def sgm_to_diffusers(name: str, layers_per_block: int, up_attention: Iterable[bool]) -> str:
    """A UNet module name in Stability's layout, underscores for dots (input_blocks_4_1_transformer_blocks_0_attn1_to_q),
    as diffusers' (down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q); other names unchanged.
    `up_attention[k]`: whether diffusers' up block k has attentions (its upsampler is then the third part)."""
    for top, new in _TOP.items():
        if name == top or name.startswith(top + "_"):
            return new + name[len(top):]
    per, up_attention = layers_per_block + 1, list(up_attention)
    blocks = re.match(r"^(input|output)_blocks_(\d+)_(\d+)_(.+)$", name)
    middle = re.match(r"^middle_block_(\d+)_(.+)$", name)
    if middle is not None:
        i, rest = int(middle.group(1)), middle.group(2)
        prefix = "mid_block_attentions_0" if i == 1 else f"mid_block_resnets_{i // 2}"
    elif blocks is not None and blocks.group(1) == "input":
        (level, pos), j, rest = divmod(int(blocks.group(2)) - 1, per), int(blocks.group(3)), blocks.group(4)
        prefix = (f"down_blocks_{level}_downsamplers_0" if pos == layers_per_block else
                  f"down_blocks_{level}_{'resnets' if j == 0 else 'attentions'}_{pos}")
    elif blocks is not None:
        (level, pos), j, rest = divmod(int(blocks.group(2)), per), int(blocks.group(3)), blocks.group(4)
        attention = level < len(up_attention) and up_attention[level]
        prefix = (f"up_blocks_{level}_resnets_{pos}" if j == 0 else f"up_blocks_{level}_attentions_{pos}"
                  if j == 1 and attention else f"up_blocks_{level}_upsamplers_0")
    else:
        return name
    if "attentions" not in prefix:  # a resnet or resampler: Stability's sub-layer names
        for old, new in _RESNET_PARTS.items():
            if rest == old or rest.startswith(old + "_"):
                rest = new + rest[len(old):]
                break
    return f"{prefix}_{rest}"


class LoraPatch:
    """LoRA updates merged into modules' weights, with the originals kept: `remove()` restores them."""

    def __init__(self) -> None:
        self.originals: dict[int, tuple[nn.Parameter, Tensor]] = {}
        self.applied: list[dict[str, Any]] = []

    def add(self, param: nn.Parameter, delta: Tensor) -> None:
        """param += delta (float32 arithmetic, stored in the parameter's dtype)."""
        with torch.no_grad():
            self.originals.setdefault(id(param), (param, param.detach().clone()))
            param.copy_((param.float() + delta.to(param.device)).to(param.dtype))

    def remove(self) -> None:
        """Every patched weight back to its value before the first LoRA."""
        with torch.no_grad():
            for param, original in self.originals.values():
                param.copy_(original)
        self.originals.clear()
        self.applied.clear()


def _lookup(component: nn.Module, kohya: bool) -> dict[str, nn.Module]:
    """A component's weighted modules by the names a LoRA file may use (dots as underscores for kohya's)."""
    table = {}
    for name, module in component.named_modules():
        if isinstance(getattr(module, "weight", None), Tensor) and name:
            table[name.replace(".", "_") if kohya else name] = module
    return table


def merge_loras(components: Mapping[str, nn.Module], loras: Iterable[tuple[str, float]], patch: LoraPatch | None = None,
                layers_per_block: int | None = None, up_attention: Iterable[bool] = ()) -> LoraPatch:
    """Merge each (file, weight) into `components` ({"unet": ..., "text_encoder": ..., "text_encoder_2": ...}); every
    layer must find its module with the right shape (else an IncompatibleCheckpointError naming the file, the key
    `lora` and the first misfits). `layers_per_block` / `up_attention` describe a diffusers UNet for SDXL files in
    Stability's layout."""
    patch = patch or LoraPatch()
    tables = {(c, k): _lookup(m, k) for c, m in components.items() for k in (True, False)}
    for path, weight in loras:
        layers, metadata = read_lora(path)
        pending, misfits = [], []
        for layer in layers:
            name = layer.module
            if layer.component == "unet" and layers_per_block is not None and "." not in name:
                name = sgm_to_diffusers(name, layers_per_block, up_attention)
            kohya = "." not in name
            table = tables.get((layer.component, kohya))
            module = None if table is None else table.get(name.replace(".", "_") if kohya else name)
            shape = None if module is None else module.weight.shape
            if module is None or layer.up.shape[0] != shape[0] or layer.down[0].numel() != shape[1:].numel():
                misfits.append(f"{layer.component}.{layer.module}" + ("" if module is None else f" ({tuple(shape)} "
                               f"here, the LoRA's {tuple(layer.up.shape[:1]) + tuple(layer.down.shape[1:])})"))
                continue
            pending.append((module.weight, layer))
        if misfits:
            patch.remove()
            base = metadata.get("ss_base_model_version") or metadata.get("difflab_base") or "another base model"
            raise IncompatibleCheckpointError(
                f"The LoRA '{path}' (config key `{KEY}`) was made for {base}: {len(misfits)} of its {len(layers)} "
                f"layers find no module of that name and shape in this model, e.g. {', '.join(misfits[:3])}. Use a "
                "LoRA trained on this model's base (SD 1.x, SD 2.x and SDXL LoRAs do not mix).")
        for param, layer in pending:
            patch.add(param, weight * layer.delta(param.shape))
        patch.applied.append({"path": str(path), "weight": float(weight), "name": Path(str(path)).stem,
                              "layers": len(layers)})
    return patch


def write_kohya(path: str | Path, layers: Iterable[LoraLayer], metadata: Mapping[str, str] | None = None) -> Path:
    """A LoRA file in the web UI's (kohya's) format: lora_unet_<module>.lora_down.weight / .lora_up.weight / .alpha;
    written to a temp file beside `path`, then renamed."""
    from safetensors.torch import save_file  # reason: safetensors ships with transformers / diffusers

    tensors, layers = {}, list(layers)
    two = any(layer.component == "text_encoder_2" for layer in layers)  # SDXL: lora_te1_ beside lora_te2_
    for layer in layers:
        prefix = "lora_te1_" if two and layer.component == "text_encoder" else KOHYA_OUT[layer.component]
        stem = prefix + layer.module.replace(".", "_")
        assert layer.down is not None and layer.up is not None
        tensors[f"{stem}.lora_down.weight"] = layer.down.detach().float().cpu().contiguous()
        tensors[f"{stem}.lora_up.weight"] = layer.up.detach().float().cpu().contiguous()
        tensors[f"{stem}.alpha"] = torch.tensor(float(layer.alpha if layer.alpha is not None else layer.down.shape[0]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    tmp.replace(path)
    return path
