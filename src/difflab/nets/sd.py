"""Stable Diffusion's UNet (diffusers `UNet2DConditionModel`) as a difflab network.

    F(x_in [B, 4, h, w], c_noise [B], context [B, L, D]) = unet(x_in, t = c_noise, encoder_hidden_states=context)

With `DiscreteVPScheduler` (c_in = 1/sqrt(1 + sigma^2), c_noise = the fractional training timestep t(sigma)),
`Denoiser(SDUNet(unet), scheduler)` is SD's model in the sigma view: x_in is the VP latent, F is its eps
(or v) prediction, exactly what diffusers' schedulers feed it after `scale_model_input`.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SDUNet"]


class SDUNet(nn.Module):
    """A diffusers `UNet2DConditionModel` behind difflab's `net(x, c_noise, cond)`; `cond` is the text context."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.context_dim = int(unet.config.cross_attention_dim)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B, C, h, w), (B,), (B, L, D) -> (B, C, h, w) in the UNet's dtype."""
        if cond is None:
            raise ValueError("the Stable Diffusion UNet needs a text context (cond [B, L, D]); the empty prompt "
                             "is the unconditional one")
        dtype = self.unet.dtype
        return self.unet(x.to(dtype), c_noise, encoder_hidden_states=cond.to(dtype), return_dict=False)[0]
