"""The networks that benchmarks/gpu.py times, each as difflab builds it and as diffusers does at the same size.

    cifar10  the UNet of `experiment=cifar10_ddpm` (35.7M parameters, 32x32x3) and its diffusers `UNet2DModel` twin:
             the same config and weights (`difflab.lit.pipelines.diffusers_unet`), so the same function
    ldm      the UNet of `model=ldm data.resolution=128` on 32x32x4 latents (f = 4) and its twin, the same way
    sd       an SD-1.5-sized difflab UNet with cross-attention (320-640-1280-1280 channels, two res blocks, attention at
             64/32/16, 8 heads, a 77x768 context) beside diffusers' `UNet2DConditionModel` with SD 1.5's config, on 64x64x4
             latents, random weights: not the same function (SD's transformer blocks add a feed-forward layer and
             projections), so its rows compare through FLOPs and MFU as well as images/s

`--smoke` shrinks each to a few thousand parameters at 8x8 with the same block types.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn

from difflab.diffusion import DiffusionLoss
from difflab.lit import DiffusionModule
from difflab.lit.pipelines import diffusers_unet
from difflab.nets import UNet
from difflab.samplers import SamplerSpec
from difflab.utils.config import compose

Forward = Callable[..., Tensor]
TINY = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1", "model.net.num_heads=2",
        "+model.net.norm_groups=4"]
PRESETS = {  # name -> (train.py overrides, smoke overrides)
    "cifar10": (["experiment=cifar10_ddpm"], [*TINY, "data.resolution=8"]),
    "ldm": (["model=ldm", "data.resolution=128"], [*TINY, "data.resolution=32"]),
}


@dataclass
class Pair:
    """One preset: difflab's network and diffusers' at the same size, their forwards `f(x, c_noise, *extra)`, the
    shape of one input (C, H, W), the extra inputs' shapes per image (the text context), and, where the two compute
    the same function, the difflab module that samples with it (`same` tells)."""

    name: str
    ours: nn.Module
    ours_fwd: Forward
    theirs: nn.Module
    theirs_fwd: Forward
    shape: tuple[int, int, int]
    extra: tuple[tuple[int, ...], ...] = ()
    module: DiffusionModule | None = None
    same: bool = True

    def inputs(self, batch: int, device: torch.device, seed: int = 0) -> tuple[Tensor, ...]:
        """(x, c_noise, target, *extra) for a batch of `batch`, drawn from `seed`."""
        g = torch.Generator().manual_seed(seed)
        x, target = (torch.randn(batch, *self.shape, generator=g) for _ in range(2))
        c_noise = torch.rand(batch, generator=g) * 999
        extra = [torch.randn(batch, *shape, generator=g) for shape in self.extra]
        return tuple(t.to(device) for t in (x, c_noise, target, *extra))


def preset_module(name: str, smoke: bool, device: torch.device) -> DiffusionModule:
    """The DiffusionModule of a composed preset (identity first stage: the net sees what `latent_shape` says), its
    network initialised on `device` (the scheduler's tables stay on the host, where the samplers read them)."""
    overrides, tiny = PRESETS[name]
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose("train", [*overrides, *(tiny if smoke else []), "logger=csv"], run_dir)
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    torch.manual_seed(0)
    with device:
        net = instantiate(net_cfg)
    scheduler = instantiate(cfg.scheduler)
    shape = (net.in_channels, net_cfg["resolution"], net_cfg["resolution"])
    module = DiffusionModule(net, scheduler, DiffusionLoss(), partial(torch.optim.AdamW), image_shape=shape,
                             sampler=SamplerSpec("dpmpp_2m", steps=20))
    module.run_config = {"model": {"net": net_cfg}}
    return module


def twin_pair(name: str, smoke: bool, device: torch.device) -> Pair:
    """A difflab preset and its diffusers `UNet2DModel` twin with the same weights, on `device`."""
    module = preset_module(name, smoke, device)
    theirs = diffusers_unet(module).to(device).train()
    net = module.net.train()
    return Pair(name, net, net, theirs, lambda x, t: theirs(x, t, return_dict=False)[0], module.latent_shape,
                module=module)


def sd_pair(smoke: bool, device: torch.device) -> Pair:
    """An SD-1.5-sized difflab UNet and diffusers' `UNet2DConditionModel` (SD 1.5's config), random weights drawn
    on `device` (an SD-sized UNet takes many seconds to initialise on a CPU)."""
    res, context = (8, (7, 16)) if smoke else (64, (77, 768))
    mult, base = ((1, 2), 32) if smoke else ((1, 2, 4, 4), 320)
    torch.manual_seed(0)
    with device:
        return _sd_pair(smoke, res, context, mult, base)


def _sd_pair(smoke: bool, res: int, context: tuple[int, int], mult: tuple[int, ...], base: int) -> Pair:
    from diffusers import UNet2DConditionModel  # an optional dependency (the `bench` extra)

    ours = UNet(in_channels=4, base_channels=base, channel_mult=mult, num_res_blocks=1 if smoke else 2,
                attention_resolutions=tuple(res // 2**i for i in range(len(mult) - 1)), resolution=res,
                num_heads=2 if smoke else 8, use_scale_shift_norm=False, context_dim=context[1]).train()
    kwargs = {} if not smoke else dict(
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, attention_head_dim=2, norm_num_groups=8)
    theirs = UNet2DConditionModel(sample_size=res, cross_attention_dim=context[1], **kwargs).train()
    return Pair("sd", ours, ours, theirs, lambda x, t, c: theirs(x, t, encoder_hidden_states=c, return_dict=False)[0],
                (4, res, res), extra=(context,), same=False)


def build(name: str, smoke: bool, device: torch.device) -> Pair:
    """The preset `name` (cifar10, ldm or sd) on `device`."""
    return sd_pair(smoke, device) if name == "sd" else twin_pair(name, smoke, device)


def parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
