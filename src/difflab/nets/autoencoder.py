"""First-stage autoencoders of latent diffusion (Rombach et al. 2022, "LDM"), and the interface diffusion uses.

Notation (LDM Sec. 3, App. G): an image x [B, C, H, W] in [-1, 1] is encoded to a diagonal Gaussian
q(z | x) = N(mean, exp(logvar)) over latents [B, c, H/f, W/f] (f = 2^(len(channel_mult) - 1), the
downsampling factor; c = `latent_channels`); the decoder maps z back to x. Diffusion runs on the
*scaled* latents z_s = scale_factor * (z - shift_factor), scale_factor = 1 / std(z) on the
training data (LDM App. G: "unit variance"), so every noise schedule built for [-1, 1] data applies.

The contract every diffusion model relies on (`LatentAutoencoder`):

    encode(x [B, C, H, W] in [-1, 1]) -> z_s [B, c, H/f, W/f]   (already scaled)
    decode(z_s) -> x [B, C, H, W] in [-1, 1]                      (clamped)
    latent_shape((C, H, W)) -> (c, H/f, W/f)

Pixel-space models have the identity first stage (`IdentityFirstStage`: no parameters, f = 1), so the
diffusion module always has one. Two latent implementations: `KLLatent` around difflab's own `KLAutoencoder` (trained with
`python train.py model=vae`, see `difflab.lit.autoencoder`), and `DiffusersLatent` around a
pretrained diffusers `AutoencoderKL` (e.g. stabilityai/sd-vae-ft-mse), whose `scaling_factor`
(and `shift_factor`) come from its config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.errors import ConfigError, MissingFileError
from difflab.nets.unet import AttentionBlock, Downsample, _norm
from difflab.utils.checkpoint_files import load_checkpoint_file
from difflab.utils.stored_config import instantiate_stored
from difflab.utils.weights import downloads_allowed

__all__ = [
    "AutoencoderNotFoundError",
    "DiagonalGaussian",
    "DiffusersLatent",
    "KLAutoencoder",
    "KLLatent",
    "LatentAutoencoder",
    "check_declared",
    "load_kl_autoencoder",
    "pretrained_autoencoder",
]


class AutoencoderNotFoundError(MissingFileError):
    """A first-stage checkpoint or pretrained folder is missing; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------------
# The network: encoder / decoder of the KL-regularised autoencoder (LDM's "AutoencoderKL", f = 2^(L-1))
# ---------------------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual connection (no time embedding)."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _stage(blocks: list[nn.Module]) -> nn.Sequential:
    return nn.Sequential(*blocks)


class KLAutoencoder(nn.Module):
    """LDM's KL autoencoder: x (B, C, H, W) -> posterior over z (B, c, H/f, W/f) -> x_hat.

    Levels: `channel_mult` (one per resolution, f = 2^(len - 1)); `num_res_blocks` ResnetBlocks per
    level (decoder: one more); self-attention at the feature sizes in `attention_resolutions` and
    in the middle block (`mid_attention`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        resolution: int = 64,
        num_heads: int = 1,
        norm_groups: int = 32,
        mid_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.latent_channels = int(in_channels), int(latent_channels)
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        if resolution % self.downsample_factor:
            raise ValueError(f"resolution {resolution} is not divisible by the downsampling factor "
                             f"f={self.downsample_factor} (2^(len(channel_mult) - 1))")
        chans = [base_channels * m for m in channel_mult]
        attn = set(int(r) for r in attention_resolutions)
        res_block = lambda a, b: ResnetBlock(a, b, norm_groups, dropout)  # noqa: E731
        attention = lambda c: AttentionBlock(c, num_heads, norm_groups)  # noqa: E731

        # encoder: conv_in -> levels (down) -> mid -> norm, SiLU, conv_out -> 2c moments
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch, size = base_channels, resolution
        for level, out in enumerate(chans):
            blocks: list[nn.Module] = []
            for _ in range(num_res_blocks):
                blocks.append(res_block(ch, out))
                ch = out
                if size in attn:
                    blocks.append(_NoEmb(attention(ch)))
            if level < len(chans) - 1:
                blocks.append(_NoEmb(Downsample(ch)))
                size //= 2
            self.down.append(_stage(blocks))
        self.enc_mid = _stage([res_block(ch, ch), *([_NoEmb(attention(ch))] if mid_attention else []), res_block(ch, ch)])
        self.enc_out = _stage([_norm(ch, norm_groups), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)])
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)

        # decoder: post_quant_conv -> conv_in -> mid -> levels (up) -> norm, SiLU, conv_out
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        ch = chans[-1]
        self.dec_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        self.dec_mid = _stage([res_block(ch, ch), *([_NoEmb(attention(ch))] if mid_attention else []), res_block(ch, ch)])
        self.up = nn.ModuleList()
        for level, out in reversed(list(enumerate(chans))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_block(ch, out))
                ch = out
                if size in attn:
                    blocks.append(_NoEmb(attention(ch)))
            if level > 0:
                blocks.append(Upsample(ch))
                size *= 2
            self.up.append(_stage(blocks))
        self.dec_out = _stage([_norm(ch, norm_groups), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1)])

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """x (B, C, H, W) in [-1, 1] -> q(z | x) over (B, c, H/f, W/f)."""
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        moments = self.quant_conv(self.enc_out(self.enc_mid(h)))  # (B, 2c, H/f, W/f)
        return DiagonalGaussian(moments)

    def decode(self, z: Tensor) -> Tensor:
        """z (B, c, H/f, W/f) -> x_hat (B, C, H, W), unclamped."""
        h = self.dec_mid(self.dec_in(self.post_quant_conv(z)))
        for stage in self.up:
            h = stage(h)
        return self.dec_out(h)

    def forward(self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """(x_hat (B, C, H, W), posterior); z is a posterior sample (or its mean when not `sample`)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior


class _NoEmb(nn.Module):
    """A UNet block (AttentionBlock, Downsample) called without the time embedding, for nn.Sequential."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))) from moments (B, 2c, h, w); logvar clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: Tensor) -> None:
        self.mean, logvar = moments.float().chunk(2, dim=1)  # (B, c, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std * eps (reparameterised)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q(z|x) || N(0, I)) summed over (c, h, w): [B]."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


# ---------------------------------------------------------------------------------------------------
# The interface diffusion uses: scaled latents, frozen weights
# ---------------------------------------------------------------------------------------------------


class LatentAutoencoder(nn.Module):
    """A frozen first stage: `encode` gives scaled latents, `decode` images in [-1, 1].

    `scale_factor` is a buffer (saved in checkpoints); NaN means "not known yet": the diffusion module
    computes 1 / std(z) on the training data at fit start (`set_scale_factor`).
    """

    latent_channels: int
    downsample_factor: int

    def __init__(self, scale_factor: float | None = None, shift_factor: float = 0.0) -> None:
        super().__init__()
        value = math.nan if scale_factor is None else float(scale_factor)
        self.register_buffer("scale_factor", torch.tensor(value, dtype=torch.float32))
        self.register_buffer("shift_factor", torch.tensor(float(shift_factor), dtype=torch.float32))

    # -- to implement: the posterior and the decoder on unscaled latents --
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of q(z | x), unscaled, float32 (B, c, H/f, W/f) each."""
        raise NotImplementedError

    def decode_unscaled(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def encode_unscaled(self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """A posterior sample z = mean + std * eps (or the mean when not `sample`), unscaled."""
        mean, std = self.posterior(x)
        if not sample:
            return mean
        return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def scale(self, z: Tensor) -> Tensor:
        """Unscaled latents -> what diffusion runs on: scale_factor * (z - shift_factor)."""
        self._check_scale()
        return (z.float() - self.shift_factor) * self.scale_factor

    # -- the contract --
    @property
    def has_scale_factor(self) -> bool:
        return bool(torch.isfinite(self.scale_factor))

    def set_scale_factor(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"latent scale factor must be finite and > 0, got {value}")
        self.scale_factor.fill_(float(value))

    def _check_scale(self) -> None:
        if not self.has_scale_factor:
            raise RuntimeError("the latent scale factor is not set: it is computed from the training data at fit "
                               "start, or set it with model.autoencoder.scale_factor")

    @torch.no_grad()
    def encode(self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """x (B, C, H, W) in [-1, 1] -> scale_factor * (z - shift_factor) (B, c, H/f, W/f), float32."""
        self._check_scale()
        return self.scale(self.encode_unscaled(x, sample=sample, generator=generator))

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents (B, c, h, w) -> images (B, C, h*f, w*f) in [-1, 1], float32."""
        self._check_scale()
        return self.decode_unscaled(z / self.scale_factor + self.shift_factor).float().clamp(-1.0, 1.0)

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, H, W) of the images -> (c, H/f, W/f) of the latents."""
        _, h, w = (int(v) for v in image_shape)
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(f"image size {h}x{w} is not divisible by the autoencoder's downsampling factor f={f}")
        return (self.latent_channels, h // f, w // f)

    def train(self, mode: bool = True) -> LatentAutoencoder:
        return super().train(False)  # frozen: always in eval mode

    def log_values(self) -> dict[str, float]:
        """What a training run logs about the first stage at fit start."""
        return {"latent/scale_factor": float(self.scale_factor)}


class IdentityFirstStage(nn.Module):
    """Pixel space as a first stage: encode and decode are the identity (f = 1); no parameters, no buffers,
    so a pixel model's state_dict keys are those of its denoiser alone."""

    has_scale_factor = True

    def encode(self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] are what diffusion runs on."""
        return x

    def decode(self, z: Tensor) -> Tensor:
        """The images themselves."""
        return z

    def scale(self, z: Tensor) -> Tensor:
        return z

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, H, W) -> (C, H, W)."""
        c, h, w = (int(v) for v in image_shape)
        return (c, h, w)

    def log_values(self) -> dict[str, float]:
        return {}


class KLLatent(LatentAutoencoder):
    """difflab's `KLAutoencoder` behind the latent interface (frozen)."""

    def __init__(self, autoencoder: KLAutoencoder, scale_factor: float | None = None) -> None:
        super().__init__(scale_factor)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.latent_channels = autoencoder.latent_channels
        self.downsample_factor = autoencoder.downsample_factor

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.autoencoder.encode(x)
        return q.mean, q.std

    def decode_unscaled(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z)


class DiffusersLatent(LatentAutoencoder):
    """A diffusers `AutoencoderKL` behind the latent interface; scale/shift from its config unless given."""

    def __init__(self, vae: nn.Module, scale_factor: float | None = None) -> None:
        config = vae.config
        scale = scale_factor if scale_factor is not None else getattr(config, "scaling_factor", None)
        super().__init__(scale, float(getattr(config, "shift_factor", None) or 0.0))
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = int(config.latent_channels)
        self.downsample_factor = 2 ** (len(config.block_out_channels) - 1)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return q.mean.float(), q.std.float()

    def decode_unscaled(self, z: Tensor) -> Tensor:
        return self.vae.decode(z.to(self.vae.dtype)).sample


# ---------------------------------------------------------------------------------------------------
# Factories (Hydra targets of conf/model/autoencoder/*.yaml)
# ---------------------------------------------------------------------------------------------------


def check_declared(latent: LatentAutoencoder, latent_channels: int | None, downsample_factor: int | None) -> LatentAutoencoder:
    """Refuse an autoencoder whose latent channels / factor differ from those the config declares (and sizes the net by)."""
    for key, declared, actual in (("latent_channels", latent_channels, latent.latent_channels),
                                  ("downsample_factor", downsample_factor, latent.downsample_factor)):
        if declared is not None and int(declared) != int(actual):
            raise ConfigError.bad_value(f"model.autoencoder.{key}", f"{declared}, but the autoencoder has {key}={actual}",
                                        f"Set model.autoencoder.{key}={actual}.")
    return latent


def load_kl_autoencoder(ckpt: str | None, scale_factor: float | None = None, latent_channels: int | None = None,
                        downsample_factor: int | None = None, **_: Any) -> KLLatent:
    """The frozen KL autoencoder of a `model=vae` checkpoint (network rebuilt from the config saved in it).

    Extra keys (the stage-1 settings used when `ckpt` is null) are ignored here.
    """
    if not ckpt:
        raise AutoencoderNotFoundError(
            "model.autoencoder.ckpt is null: give a first-stage checkpoint (`python train.py model=vae ...` writes "
            "<run>/checkpoints/last.ckpt), or run `python train.py model=ldm ...` to train stage 1 first")
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise AutoencoderNotFoundError(
            f"autoencoder checkpoint not found: '{path}' (config key `model.autoencoder.ckpt`). Train one with "
            "`python train.py model=vae data=<data>` (it writes <run>/checkpoints/last.ckpt), or set the key to null "
            "to train stage 1 inside the LDM run.")
    blob = load_checkpoint_file(path, key="model.autoencoder.ckpt")
    net_cfg = ((blob.get("config") or {}).get("model") or {}).get("net") if isinstance(blob, dict) else None
    if not isinstance(net_cfg, dict) or "state_dict" not in blob:
        raise AutoencoderNotFoundError(f"'{path}' is not a difflab autoencoder checkpoint (no model.net config "
                                       "and state_dict in it); it must come from `python train.py model=vae`")
    net = instantiate_stored(net_cfg, path, "model.net", key="model.autoencoder.ckpt")
    if not isinstance(net, KLAutoencoder):
        raise AutoencoderNotFoundError(f"'{path}' holds a {type(net).__name__}, not a KLAutoencoder "
                                       "(config key `model.autoencoder.ckpt` must point at a model=vae checkpoint)")
    state = {k[len("net."):]: v for k, v in blob["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state, strict=True)
    latent = KLLatent(net, scale_factor)  # scale_factor None: computed from the training data at fit start
    return check_declared(latent, latent_channels, downsample_factor)


def pretrained_autoencoder(path: str, scale_factor: float | None = None, subfolder: str | None = None,
                           local_files_only: bool | None = None, latent_channels: int | None = None,
                           downsample_factor: int | None = None) -> DiffusersLatent:
    """A diffusers `AutoencoderKL` from a local folder (saved with `save_pretrained`) or a Hub name in the cache."""
    try:
        from diffusers import (
            AutoencoderKL,  # an optional dependency (the `sd` extra), imported where it is used
        )
    except ImportError as err:
        raise AutoencoderNotFoundError("model.autoencoder=pretrained needs diffusers: pip install diffusers") from err
    if not path:
        raise AutoencoderNotFoundError("model.autoencoder.path is null: set it to a folder saved with "
                                       "AutoencoderKL.save_pretrained or a Hub name such as stabilityai/sd-vae-ft-mse")
    local = Path(path).expanduser()
    if str(path).startswith((".", "/", "~")) and not local.is_dir():
        raise AutoencoderNotFoundError(f"pretrained autoencoder folder not found: '{local}' (config key "
                                       "`model.autoencoder.path`); it must hold config.json and the weights")
    source = str(local) if local.is_dir() else str(path)
    only_local = local.is_dir() or not downloads_allowed() if local_files_only is None else bool(local_files_only)
    try:
        vae = AutoencoderKL.from_pretrained(source, subfolder=subfolder, local_files_only=only_local)
    except (OSError, ValueError) as err:
        raise AutoencoderNotFoundError(
            f"cannot load the pretrained AutoencoderKL '{path}' (config key `model.autoencoder.path`): {err}. "
            f"On a machine with internet run `huggingface-cli download {path}` (or save it with save_pretrained) and "
            "point the key at the folder; only the local cache is used unless DIFFLAB_ALLOW_DOWNLOAD=1.") from None
    return check_declared(DiffusersLatent(vae, scale_factor), latent_channels, downsample_factor)
