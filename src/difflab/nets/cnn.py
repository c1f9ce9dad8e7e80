"""A small CNN that reads images: the condition classifier (labels) and the condition regressor (vectors)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.errors import ConfigError


class SmallCNN(nn.Module):
    """Three conv layers (two strided), GroupNorm + SiLU, global average pooling and a linear head; inputs in [-1, 1].

    With `coords`, two channels holding the pixel coordinates in [-1, 1] are appended to the input (CoordConv,
    Liu et al. 2018), so that the pooled features can encode where things are (needed to regress positions).
    [B, C, H, W] -> [B, outputs] for any H, W."""

    def __init__(self, channels: int, outputs: int, width: int = 32, coords: bool = False) -> None:
        super().__init__()
        if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
            raise ConfigError.bad_value("model.net.outputs", f"{outputs!r}; the network needs one output per value "
                                        "(data.cond_dim, which data sets with a vector per image set)",
                                        "Use data=shapes, or data=csv data.csv=<file> data.columns=[x1,...].")
        self.channels, self.outputs, self.coords = int(channels), int(outputs), bool(coords)
        self.net = nn.Sequential(
            nn.Conv2d(channels + 2 * coords, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.coords:
            t = torch.linspace(-1, 1, x.shape[-1], device=x.device, dtype=x.dtype)
            v, u = torch.meshgrid(torch.linspace(-1, 1, x.shape[-2], device=x.device, dtype=x.dtype), t, indexing="ij")
            x = torch.cat([x, u.expand(x.shape[0], 1, -1, -1), v.expand(x.shape[0], 1, -1, -1)], dim=1)
        return self.net(x)
