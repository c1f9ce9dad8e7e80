"""diffusers' UNets as difflab networks: Stable Diffusion's `UNet2DConditionModel` and the `UNet2DModel` of
DDPM/DDIM pipelines.

    F(x_in [B, 4, h, w], c_noise [B], context [B, L, D]) = unet(x_in, t = c_noise, encoder_hidden_states=context)

SDXL's UNet (`addition_embed_type="text_time"`) also takes the pooled text embedding [B, P] and the size ids
[B, 6] (original size, crop top-left, target size; Podell et al. 2023, Sec. 2.2): cond is then a `TextCond`
(`difflab.diffusion.conditioning`) and they reach the UNet as `added_cond_kwargs`.

With `DiscreteVPScheduler` (c_in = 1/sqrt(1 + sigma^2), c_noise = the fractional training timestep t(sigma)),
`Denoiser(SDUNet(unet), scheduler)` is SD's model in the sigma view: x_in is the VP latent, F is its eps
(or v) prediction, exactly what diffusers' schedulers feed it after `scale_model_input`.

    F(x_in [B, C, H, W], c_noise [B], labels [B] | None) = unet(x_in, t = c_noise, class_labels=labels)

is `DiffusersUNet`, the same for a `UNet2DModel`; a class-conditional one (`num_class_embeds` = K + 1) takes
labels 0..K-1 and its last class embedding is the null class (-1) of classifier-free guidance, as in
difflab's `ClassEmbedding`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from difflab.diffusion.conditioning import TextCond

__all__ = ["DiffusersUNet", "SDUNet"]


class SDUNet(nn.Module):
    """A diffusers `UNet2DConditionModel` behind difflab's `net(x, c_noise, cond)`; `cond` is the text context."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.context_dim = int(unet.config.cross_attention_dim)
        self.text_time = getattr(unet.config, "addition_embed_type", None) == "text_time"  # SDXL

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | TextCond | None = None) -> Tensor:
        """(B, C, h, w), (B,), context (B, L, D) or a `TextCond` -> (B, C, h, w) in the UNet's dtype."""
        if cond is None:
            raise ValueError("the Stable Diffusion UNet needs a text context (cond [B, L, D]); the empty prompt "
                             "is the unconditional one")
        dtype = self.unet.dtype
        context = cond.context if isinstance(cond, TextCond) else cond
        added: dict[str, Any] | None = None
        if self.text_time:
            if not isinstance(cond, TextCond) or cond.pooled is None or cond.time_ids is None:
                raise ValueError("an SDXL UNet needs the pooled text embedding and the size ids (a TextCond from "
                                 "difflab.nets.text.SDXLTextEncoder)")
            added = {"text_embeds": cond.pooled.to(dtype), "time_ids": cond.time_ids.to(dtype)}
        return self.unet(x.to(dtype), c_noise, encoder_hidden_states=context.to(dtype), added_cond_kwargs=added,
                         return_dict=False)[0]


class DiffusersUNet(nn.Module):
    """A diffusers `UNet2DModel` behind difflab's `net(x, c_noise, cond)`; `cond` holds class labels (-1 = null)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        classes = unet.config.num_class_embeds
        self.null_index = int(classes) - 1 if classes else None  # the last class embedding

    @property
    def conditional(self) -> bool:
        """Whether the network takes class labels."""
        return self.null_index is not None

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (B,) and labels (B,) or None -> (B, C, H, W) in float32."""
        if cond is not None and self.null_index is None:
            raise ValueError("cond was given but this UNet2DModel has no class embedding")
        labels = None if cond is None else torch.where(cond == -1, self.null_index, cond)  # (B,)
        dtype = self.unet.dtype
        return self.unet(x.to(dtype), c_noise, class_labels=labels, return_dict=False)[0].float()
