"""ADM / improved-DDPM U-Net (Dhariwal & Nichol 2021; Nichol & Dhariwal 2021).

The network knows nothing about diffusion: it maps ``(x, c_noise, cond)`` to a tensor of the
same spatial size; what ``c_noise`` means and how the output is used is the preconditioning's
business (``difflab.diffusion.precond``).

Layout (``L = len(channel_mult)``, ``R = num_res_blocks``; attention after every ResBlock whose
feature map size is in ``attention_resolutions``)::

    conv_in -> L levels of [R x (ResBlock [+ Attn])] with a stride-2 conv between levels
            -> middle: ResBlock, Attn, ResBlock
            -> L levels of [(R + 1) x (concat skip, ResBlock [+ Attn])] with nearest x2 + conv between
            -> GroupNorm, SiLU, conv_out (zero-initialised)

Speed without changing the function: one fused qkv projection per attention block, SiLU of the
embedding computed once for all ResBlocks (ADM applies the same SiLU inside each), and the
upsampling "nearest x2 then 3x3 conv" run as one equivalent stride-2 transposed conv.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from difflab.nets.embeddings import TimestepEmbedding

__all__ = ["UNet"]


def _num_groups(channels: int, norm_groups: int) -> int:
    """Largest group count <= min(norm_groups, channels) that divides `channels`."""
    groups = min(norm_groups, channels)
    while channels % groups:
        groups -= 1
    return groups


def _norm(channels: int, norm_groups: int) -> nn.GroupNorm:
    """GroupNorm with a group count that divides `channels`."""
    return nn.GroupNorm(_num_groups(channels, norm_groups), channels, eps=1e-5)


def _zero_(module: nn.Module) -> nn.Module:
    """Zero all parameters of `module` in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _attention_heads(channels: int, num_heads: int, head_channels: int | None) -> int:
    """Number of attention heads for `channels`, from `head_channels` when given else `num_heads`."""
    if head_channels is not None:
        if channels % head_channels:
            raise ValueError(f"attention channels {channels} not divisible by head_channels={head_channels}")
        return channels // head_channels
    if channels % num_heads:
        raise ValueError(f"attention channels {channels} not divisible by num_heads={num_heads}")
    return num_heads


class ResBlock(nn.Module):
    """ADM residual block; takes the already SiLU-activated embedding (shared by all blocks)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        dropout: float,
        use_scale_shift_norm: bool,
        norm_groups: int,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.norm1 = _norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        self.norm2 = _norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Residual update of x (B, C_in, H, W) given SiLU(emb) (B, E) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        e = self.emb_proj(emb)[:, :, None, None]  # (B, C_out or 2 C_out, 1, 1)
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)  # (B, C_out, 1, 1) each
            h = torch.addcmul(shift, self.norm2(h), scale + 1.0)  # norm(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, C_out, H, W)
        return self.skip(x) + h


class CrossAttention(nn.Module):
    """The H*W positions attend to a context sequence (LDM Sec. 3.3: Q from the image, K, V from the text)."""

    def __init__(self, channels: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels, bias=False)
        self.kv = nn.Linear(context_dim, 2 * channels, bias=False)
        self.proj = _zero_(nn.Linear(channels, channels))

    def forward(self, tokens: Tensor, context: Tensor) -> Tensor:
        """tokens (B, L, C), context (B, S, E) -> tokens + attention (B, L, C)."""
        q = rearrange(self.q(self.norm(tokens)), "b l (n d) -> b n l d", n=self.num_heads)  # (B, N, L, D)
        kv = self.kv(context.to(tokens.dtype))  # (B, S, 2C)
        k, v = rearrange(kv, "b s (two n d) -> two b n s d", two=2, n=self.num_heads)  # (B, N, S, D)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, N, L, D)
        return tokens + self.proj(rearrange(out, "b n l d -> b l (n d)"))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a zero-initialised output projection;
    with `context_dim`, then cross-attention to a context (e.g. text) sequence."""

    def __init__(self, channels: int, num_heads: int, norm_groups: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels, norm_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero_(nn.Linear(channels, channels))
        self.cross = CrossAttention(channels, context_dim, num_heads) if context_dim is not None else None

    def forward(self, x: Tensor, emb: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        """x (B, C, H, W) [, context (B, S, E)] -> x + attention (B, C, H, W); `emb` is ignored."""
        height = x.shape[2]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, L, C)
        qkv = self.qkv(tokens)  # (B, L, 3C)
        q, k, v = rearrange(qkv, "b l (three n d) -> three b n l d", three=3, n=self.num_heads)  # (B, N, L, D)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, N, L, D)
        out = self.proj(rearrange(out, "b n l d -> b l (n d)"))  # (B, L, C)
        x = x + rearrange(out, "b (h w) c -> b c h w", h=height)
        if self.cross is None:
            return x
        if context is None:
            raise ValueError("this UNet cross-attends to a context (model.net.context_dim is set): pass cond = (B, S, E)")
        tokens = self.cross(rearrange(x, "b c h w -> b (h w) c"), context)  # (B, L, C)
        return rearrange(tokens, "b (h w) c -> b c h w", h=height)


class Downsample(nn.Module):
    """3x3 convolution with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(x)


def _nearest_up_kernel(weight: Tensor) -> Tensor:
    """4x4 stride-2 transposed-conv kernel equal to nearest x2 upsampling followed by a 3x3 conv."""
    # Output row 2i reads input rows (i-1, i) with taps (w0, w1 + w2); row 2i+1 reads (i, i+1)
    # with (w0 + w1, w2). As conv_transpose2d(stride=2, padding=1) taps k = 0..3 that is
    # [w2, w1 + w2, w0 + w1, w0] along each spatial axis.
    def expand(w: Tensor, dim: int) -> Tensor:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    kernel = expand(expand(weight, 2), 3)  # (C_out, C_in, 4, 4)
    return kernel.transpose(0, 1)  # (C_in, C_out, 4, 4), the conv_transpose2d layout


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution.

    Computed exactly (up to float rounding) as one stride-2 transposed convolution whose 4x4 kernel
    is derived from the 3x3 weights: 16 instead of 36 multiply-adds per input pixel and channel
    pair, and no upsampled intermediate. Parameters are those of the 3x3 conv (`self.conv`).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        kernel = _nearest_up_kernel(self.conv.weight)  # (C, C, 4, 4)
        return F.conv_transpose2d(x, kernel, self.conv.bias, stride=2, padding=1)


class EmbedSequential(nn.ModuleList):
    """Layers applied in order, each called as `layer(h, emb)`; ResBlocks/attention optionally checkpointed."""

    def forward(self, h: Tensor, emb: Tensor, use_checkpoint: bool = False, context: Tensor | None = None) -> Tensor:
        """Run the layers on h (B, C, H, W) with the activated embedding emb (B, E) (and attention's context)."""
        for layer in self:
            extra = (context,) if isinstance(layer, AttentionBlock) and layer.cross is not None else ()
            if use_checkpoint and isinstance(layer, (ResBlock, AttentionBlock)):
                h = checkpoint(layer, h, emb, *extra, use_reentrant=False)
            else:
                h = layer(h, emb, *extra)
        return h


def _validate(
    in_channels: int,
    base_channels: int,
    channel_mult: Sequence[int],
    num_res_blocks: int,
    attention_resolutions: Sequence[int],
    resolution: int,
    dropout: float,
    num_heads: int,
    head_channels: int | None,
    norm_groups: int,
) -> None:
    """Raise ValueError on inconsistent UNet arguments."""
    for name, value in [("in_channels", in_channels), ("base_channels", base_channels),
                        ("num_res_blocks", num_res_blocks), ("resolution", resolution),
                        ("num_heads", num_heads), ("norm_groups", norm_groups)]:
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if head_channels is not None and head_channels < 1:
        raise ValueError(f"head_channels must be a positive integer or None, got {head_channels!r}")
    if len(channel_mult) == 0 or any(m < 1 for m in channel_mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    factor = 2 ** (len(channel_mult) - 1)
    if resolution % factor:
        raise ValueError(f"resolution {resolution} not divisible by 2**(len(channel_mult)-1) = {factor}")
    sizes = [resolution // 2**i for i in range(len(channel_mult))]
    for res in attention_resolutions:
        if res not in sizes:
            raise ValueError(f"attention resolution {res} is not a feature-map size; sizes are {sizes}")
    attn_channels = {base_channels * channel_mult[sizes.index(r)] for r in attention_resolutions}
    attn_channels.add(base_channels * channel_mult[-1])  # the middle block always attends
    for channels in sorted(attn_channels):
        _attention_heads(channels, num_heads, head_channels)


def _attention_block(
    channels: int, num_heads: int, head_channels: int | None, norm_groups: int, context_dim: int | None = None
) -> AttentionBlock:
    """Self-(and cross-)attention block for `channels` with heads from `head_channels` or `num_heads`."""
    return AttentionBlock(channels, _attention_heads(channels, num_heads, head_channels), norm_groups, context_dim)


def _build_encoder(
    levels: list[tuple[int, bool]],
    num_res_blocks: int,
    make_res: Callable[[int, int], nn.Module],
    make_attn: Callable[[int], nn.Module],
    ch: int,
) -> tuple[nn.ModuleList, list[int]]:
    """Encoder blocks for (channels, attend) per level, and the channel count of every skip, in order."""
    blocks, skip_channels = nn.ModuleList(), [ch]
    for level, (out_ch, attend) in enumerate(levels):
        for _ in range(num_res_blocks):
            layers = [make_res(ch, out_ch)] + ([make_attn(out_ch)] if attend else [])
            ch = out_ch
            blocks.append(EmbedSequential(layers))
            skip_channels.append(ch)
        if level != len(levels) - 1:
            blocks.append(EmbedSequential([Downsample(ch)]))
            skip_channels.append(ch)
    return blocks, skip_channels


def _build_decoder(
    levels: list[tuple[int, bool]],
    num_res_blocks: int,
    make_res: Callable[[int, int], nn.Module],
    make_attn: Callable[[int], nn.Module],
    skip_channels: list[int],
) -> tuple[nn.ModuleList, int]:
    """Decoder blocks consuming `skip_channels` from the end, and the output channel count."""
    skip_channels = list(skip_channels)
    blocks, ch = nn.ModuleList(), skip_channels[-1]
    for level in reversed(range(len(levels))):
        out_ch, attend = levels[level]
        for i in range(num_res_blocks + 1):
            layers = [make_res(ch + skip_channels.pop(), out_ch)] + ([make_attn(out_ch)] if attend else [])
            ch = out_ch
            if level and i == num_res_blocks:
                layers.append(Upsample(ch))
            blocks.append(EmbedSequential(layers))
    return blocks, ch


class UNet(nn.Module):
    """ADM-style U-Net: F(x (B, C, H, W), c_noise (B,), cond) -> (B, out_channels, H, W)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        resolution: int = 32,
        dropout: float = 0.0,
        num_heads: int = 4,
        head_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        emb_channels: int | None = None,
        norm_groups: int = 32,
        cond_embed: nn.Module | None = None,
        gradient_checkpointing: bool = False,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        _validate(in_channels, base_channels, channel_mult, num_res_blocks, attention_resolutions,
                  resolution, dropout, num_heads, head_channels, norm_groups)
        emb_channels = emb_channels if emb_channels is not None else 4 * base_channels
        if emb_channels < 1:
            raise ValueError(f"emb_channels must be positive, got {emb_channels}")
        cond_dim = getattr(cond_embed, "emb_dim", emb_channels)
        if cond_dim != emb_channels:
            raise ValueError(f"cond_embed.emb_dim={cond_dim} must equal emb_channels={emb_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.channel_mult = channel_mult
        self.gradient_checkpointing = gradient_checkpointing
        make_res = partial(ResBlock, emb_channels=emb_channels, dropout=dropout,
                           use_scale_shift_norm=use_scale_shift_norm, norm_groups=norm_groups)
        self.context_dim = context_dim  # cross-attention to cond = (B, S, context_dim) in every AttentionBlock
        make_attn = partial(_attention_block, num_heads=num_heads, head_channels=head_channels,
                            norm_groups=norm_groups, context_dim=context_dim)

        self.time_embed = TimestepEmbedding(base_channels, emb_channels)
        self.cond_embed = cond_embed
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        levels = [  # (channels, attend) per level
            (base_channels * m, resolution // 2**i in attention_resolutions) for i, m in enumerate(channel_mult)
        ]
        self.down, skip = _build_encoder(levels, num_res_blocks, make_res, make_attn, base_channels)
        ch = skip[-1]
        self.middle = EmbedSequential([make_res(ch, ch), make_attn(ch), make_res(ch, ch)])
        self.up, ch = _build_decoder(levels, num_res_blocks, make_res, make_attn, skip)
        self.norm_out = _norm(ch, norm_groups)
        self.conv_out = _zero_(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    @property
    def conditional(self) -> bool:
        """Whether the network takes a condition (a `cond_embed` module was given)."""
        return self.cond_embed is not None

    def _embed(self, c_noise: Tensor, cond: Tensor | None, batch: int) -> Tensor:
        """SiLU of time embedding (+ condition embedding), shared by all ResBlocks: (B, E)."""
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(batch)
        if c_noise.shape != (batch,):
            raise ValueError(f"c_noise must have shape ({batch},), got {tuple(c_noise.shape)}")
        emb = self.time_embed(c_noise)  # (B, E)
        if cond is not None:
            if self.cond_embed is None:
                raise ValueError("cond was given but this UNet has no cond_embed")
            emb = emb + self.cond_embed(cond)  # (B, E)
        return F.silu(emb)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """Map x (B, C, H, W), c_noise (B,) and optional cond to (B, out_channels, H, W).

        With `context_dim`, cond is the cross-attention context (B, S, context_dim), not a `cond_embed` input."""
        factor = 2 ** (len(self.channel_mult) - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"x must be (B, {self.in_channels}, H, W) with H, W divisible by {factor}, got {tuple(x.shape)}"
            )
        context = cond if self.context_dim is not None else None  # (B, S, context_dim)
        emb = self._embed(c_noise, None if self.context_dim is not None else cond, x.shape[0])  # (B, E)
        ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        h = self.conv_in(x)  # (B, base, H, W)
        skips = [h]
        for block in self.down:
            h = block(h, emb, ckpt, context)
            skips.append(h)
        h = self.middle(h, emb, ckpt, context)  # (B, C_mid, H / factor, W / factor)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, ckpt, context)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)
