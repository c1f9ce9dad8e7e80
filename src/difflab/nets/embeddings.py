"""Embeddings of the network's conditioning inputs: noise level and class label.

The noise embedding takes ``c_noise``, one float per sample chosen by the preconditioning
(e.g. the DDPM step index, ``ln(sigma) / 4`` for EDM); nothing here knows what it means.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassEmbedding", "TimestepEmbedding", "timestep_embedding"]


def timestep_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features (B, dim) in float32: cos(c * f_i) first, then sin(c * f_i); f_i = max_period^(-i/half)."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if c_noise.ndim != 1:
        raise ValueError(f"c_noise must have shape [B], got {tuple(c_noise.shape)}")
    half = dim // 2
    exponent = torch.arange(half, device=c_noise.device, dtype=torch.float32) / max(half, 1)  # (half,)
    freqs = torch.exp(-math.log(max_period) * exponent)  # (half,)
    args = c_noise.to(torch.float32)[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of `c_noise` followed by Linear -> SiLU -> Linear (DDPM / ADM)."""

    def __init__(self, model_channels: int, emb_dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if model_channels < 1 or emb_dim < 1:
            raise ValueError(f"model_channels and emb_dim must be >= 1, got {model_channels}, {emb_dim}")
        self.model_channels = model_channels
        self.emb_dim = emb_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(model_channels, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        """Map `c_noise` (B,) to an embedding (B, emb_dim)."""
        features = timestep_embedding(c_noise, self.model_channels, self.max_period)  # (B, model_channels)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # (B, emb_dim)


class ClassEmbedding(nn.Module):
    """Learned class embedding with an extra learned null class (index `num_classes`) for guidance."""

    def __init__(self, num_classes: int, emb_dim: int) -> None:
        super().__init__()
        if num_classes < 1 or emb_dim < 1:
            raise ValueError(f"num_classes and emb_dim must be >= 1, got {num_classes}, {emb_dim}")
        self.num_classes = num_classes
        self.emb_dim = emb_dim
        self.null_index = num_classes
        self.embedding = nn.Embedding(num_classes + 1, emb_dim)

    def forward(self, labels: Tensor) -> Tensor:
        """Embed integer labels (B,) -> (B, emb_dim); label -1 selects the null class."""
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        labels = torch.where(labels == -1, self.null_index, labels)  # (B,)
        return self.embedding(labels)  # (B, emb_dim)
