"""difflab's `UNet` as diffusers' `UNet2DModel`: the config and the weight mapping, both ways.

At equal architecture the two networks compute the same function with the same parameters; they differ in
names, in the fused q/k/v projection of difflab's attention (one (3C, C) matrix, rows q | k | v, each split
into heads as `(n d)`) against diffusers' `to_q`, `to_k`, `to_v`, and in difflab computing SiLU(emb) once
for all ResBlocks where diffusers applies it in each. The mapping is one table:

    difflab                      diffusers
    time_embed.mlp.0 / .2        time_embedding.linear_1 / linear_2
    cond_embed.embedding         class_embedding               (num_classes + 1 rows: the null class last)
    down.<j>.0 / .1              down_blocks.<level>.resnets.<r> / attentions.<r>
    down.<j>.0 (Downsample)      down_blocks.<level>.downsamplers.0
    middle.0 / .1 / .2           mid_block.resnets.0 / attentions.0 / resnets.1
    up.<j>.0 / .1 / .2           up_blocks.<u>.resnets.<i> / attentions.<i> / upsamplers.0
    norm_out, conv_in, conv_out  conv_norm_out, conv_in, conv_out

with, inside a ResBlock, emb_proj -> time_emb_proj and skip -> conv_shortcut, and inside attention,
norm -> group_norm, qkv -> (to_q, to_k, to_v), proj -> to_out.0. `unet2d_config` gives the `UNet2DModel`
config of a difflab net config, or a ConfigError naming the key that has no diffusers equivalent.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from difflab.errors import ConfigError
from difflab.nets.embeddings import ClassEmbedding
from difflab.nets.unet import UNet
from difflab.nets.unet import AttentionBlock, Downsample

__all__ = ["convert_state", "unet2d_config", "weight_table"]

# leaf renames inside each kind of block; a tuple is a fused difflab tensor split into its parts (dim 0)
LEAVES: dict[str, dict[str, str | tuple[str, ...]]] = {
    "res": {"norm1": "norm1", "conv1": "conv1", "emb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
            "skip": "conv_shortcut"},
    "attn": {"norm": "group_norm", "qkv": ("to_q", "to_k", "to_v"), "proj": "to_out.0"},
    "resample": {"conv": "conv"},
    "top": {"": ""},
}
TOP = {"time_embed.mlp.0": "time_embedding.linear_1", "time_embed.mlp.2": "time_embedding.linear_2",
       "cond_embed.embedding": "class_embedding", "conv_in": "conv_in", "norm_out": "conv_norm_out",
       "conv_out": "conv_out"}


def _blocks(attends: list[bool], num_res_blocks: int) -> dict[str, tuple[str, str]]:
    """difflab module path -> (diffusers module path, kind) for every block of a UNet with these levels."""
    rows = {path: (name, "top") for path, name in TOP.items()}
    levels, j = len(attends), 0
    for level, attend in enumerate(attends):
        for r in range(num_res_blocks):
            rows[f"down.{j}.0"] = (f"down_blocks.{level}.resnets.{r}", "res")
            if attend:
                rows[f"down.{j}.1"] = (f"down_blocks.{level}.attentions.{r}", "attn")
            j += 1
        if level != levels - 1:
            rows[f"down.{j}.0"] = (f"down_blocks.{level}.downsamplers.0", "resample")
            j += 1
    rows.update({"middle.0": ("mid_block.resnets.0", "res"), "middle.1": ("mid_block.attentions.0", "attn"),
                 "middle.2": ("mid_block.resnets.1", "res")})
    j = 0
    for u, level in enumerate(reversed(range(levels))):
        for i in range(num_res_blocks + 1):
            parts = ["res"] + (["attn"] if attends[level] else []) + (["resample"] if level and i == num_res_blocks else [])
            names = {"res": f"resnets.{i}", "attn": f"attentions.{i}", "resample": "upsamplers.0"}
            for k, kind in enumerate(parts):
                rows[f"up.{j}.{k}"] = (f"up_blocks.{u}.{names[kind]}", kind)
            j += 1
    return rows


def _attends(net: UNet) -> list[bool]:
    """Whether each level of `net`'s encoder attends (read from its modules)."""
    attends, current = [], False
    for block in net.down:
        if isinstance(block[0], Downsample):
            attends.append(current)
            current = False
        else:
            current = current or any(isinstance(layer, AttentionBlock) for layer in block)
    return attends + [current]


def weight_table(net: UNet) -> dict[str, tuple[str, ...]]:
    """Every parameter name of `net` -> its diffusers `UNet2DModel` name(s) (three for a fused qkv)."""
    num_res_blocks = sum(not isinstance(b[0], Downsample) for b in net.down) // len(net.channel_mult)
    blocks = _blocks(_attends(net), num_res_blocks)
    table: dict[str, tuple[str, ...]] = {}
    for name in net.state_dict():
        module, _, param = name.rpartition(".")
        block, leaf = (module, "") if module in blocks else module.rpartition(".")[::2]
        if block not in blocks or leaf not in LEAVES[blocks[block][1]]:
            raise KeyError(f"no diffusers name for difflab weight {name!r}")
        target, kind = blocks[block]
        renamed = LEAVES[kind][leaf]
        parts = renamed if isinstance(renamed, tuple) else (renamed,)
        table[name] = tuple(".".join(p for p in (target, part, param) if p) for part in parts)
    return table


def convert_state(state: dict[str, Tensor], table: dict[str, tuple[str, ...]], to_diffusers: bool = True) -> dict[str, Tensor]:
    """A difflab state dict as diffusers' (fused tensors split along dim 0), or back (`to_diffusers=False`)."""
    out: dict[str, Tensor] = {}
    for name, targets in table.items():
        if to_diffusers:
            parts = state[name].chunk(len(targets), dim=0) if len(targets) > 1 else (state[name],)
            out.update({t: p.contiguous() for t, p in zip(targets, parts)})
        else:
            out[name] = torch.cat([state[t] for t in targets], dim=0)
    return out


def _net_kwargs(net_cfg: dict[str, Any]) -> dict[str, Any]:
    """The UNet's constructor arguments: the config's values over the signature's defaults."""
    if str(net_cfg.get("_target_", "difflab.nets.UNet")).rpartition(".")[2] != "UNet":
        raise ConfigError.bad_value("model.net._target_", f"{net_cfg.get('_target_')} is not difflab's UNet",
                                    "Only difflab.nets.UNet networks export to diffusers' UNet2DModel.")
    params = inspect.signature(UNet.__init__).parameters
    kwargs = {k: p.default for k, p in params.items() if k != "self"}
    kwargs.update({k: v for k, v in net_cfg.items() if not k.startswith("_")})
    return kwargs


def _head_dim(net: UNet, kw: dict[str, Any]) -> int | None:
    """diffusers' one `attention_head_dim` for every attention block (None: one head of all channels in each),
    or a ConfigError naming the key."""
    blocks = [m for m in net.modules() if isinstance(m, AttentionBlock)]
    if all(m.num_heads == 1 for m in blocks):
        return None
    dims = sorted({m.qkv.in_features // m.num_heads for m in blocks})
    if len(dims) != 1:
        raise ConfigError.bad_value("model.net.num_heads", f"num_heads={kw['num_heads']} gives attention heads of "
                                    f"{dims} channels at different levels, and UNet2DModel has one attention_head_dim",
                                    "Train with model.net.head_channels=<channels per head> to export this network.")
    return dims[0]


def unet2d_config(net: UNet, net_cfg: dict[str, Any], sample_size: int) -> dict[str, Any]:
    """The `UNet2DModel` config of a difflab UNet (its `model.net` config and the module); ConfigError naming
    the key that has no diffusers equivalent."""
    kw = _net_kwargs(net_cfg)
    if kw.get("context_dim") is not None:
        raise ConfigError.bad_value("model.net.context_dim", "cross-attention to a text context has no equivalent in "
                                    "diffusers' UNet2DModel", "Export unconditional or class-conditional models.")
    cond = net.cond_embed
    if cond is not None and not isinstance(cond, ClassEmbedding):
        raise ConfigError.bad_value("model.net.cond_embed", f"{type(cond).__name__} has no equivalent in UNet2DModel "
                                    "(it knows class embeddings only)", "Export unconditional or class-conditional models.")
    groups = int(kw["norm_groups"])
    odd = sorted({m.num_channels for m in net.modules() if isinstance(m, nn.GroupNorm) and m.num_groups != groups})
    if odd:
        raise ConfigError.bad_value("model.net.norm_groups", f"norm_groups={groups} does not divide the channel counts "
                                    f"{odd}, so difflab used fewer groups there and UNet2DModel cannot (one norm_num_groups)",
                                    "Train with a model.net.norm_groups that divides every channel count to export it.")
    attends = _attends(net)
    channels = [int(kw["base_channels"]) * int(m) for m in net.channel_mult]
    return {
        "_class_name": "UNet2DModel", "sample_size": int(sample_size), "in_channels": net.in_channels,
        "out_channels": net.out_channels, "center_input_sample": False, "time_embedding_type": "positional",
        "time_embedding_dim": net.time_embed.emb_dim, "freq_shift": 0, "flip_sin_to_cos": True,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "mid_block_type": "UNetMidBlock2D", "block_out_channels": channels,
        "layers_per_block": int(kw["num_res_blocks"]), "mid_block_scale_factor": 1, "downsample_padding": 1,
        "downsample_type": "conv", "upsample_type": "conv", "dropout": float(kw["dropout"]), "act_fn": "silu",
        "attention_head_dim": _head_dim(net, kw), "norm_num_groups": groups, "attn_norm_num_groups": groups,
        "norm_eps": 1e-5, "resnet_time_scale_shift": "scale_shift" if kw["use_scale_shift_norm"] else "default",
        "add_attention": True, "class_embed_type": None,
        "num_class_embeds": cond.num_classes + 1 if cond is not None else None,
    }
