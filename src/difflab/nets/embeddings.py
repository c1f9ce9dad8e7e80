"""Embeddings of the network's conditioning inputs: noise level, class label and a vector of scalars.

The noise embedding takes ``c_noise``, one float per sample chosen by the preconditioning
(e.g. the DDPM step index, ``ln(sigma) / 4`` for EDM); nothing here knows what it means.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassEmbedding", "TimestepEmbedding", "VectorEmbedding", "timestep_embedding"]


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


class VectorEmbedding(nn.Module):
    """A vector of D scalars (B, D) -> (B, emb_dim): per-scalar Fourier features, then an MLP.

    Each scalar v_j (z-scored upstream, so of order 1) becomes [v_j, cos(f_k v_j), sin(f_k v_j)] for
    `num_frequencies` frequencies f_k, geometric from `min_frequency` to `max_frequency` (rad per unit),
    shared by all scalars (`learned_frequencies=true` lets each scalar learn its own, initialised the
    same); the MLP mixes the D * (2K + 1) features. A row holding NaN is the null vector of classifier-free
    guidance and gets a learned null embedding.
    """

    def __init__(self, dim: int, emb_dim: int, num_frequencies: int = 8, min_frequency: float = 0.5,
                 max_frequency: float = 32.0, learned_frequencies: bool = False) -> None:
        super().__init__()
        if dim < 1 or emb_dim < 1 or num_frequencies < 1:
            raise ValueError(f"dim, emb_dim and num_frequencies must be >= 1, got {dim}, {emb_dim}, {num_frequencies}")
        self.dim, self.emb_dim = dim, emb_dim
        exponent = torch.arange(num_frequencies, dtype=torch.float32) / max(num_frequencies - 1, 1)  # (K,)
        freqs = (min_frequency * (max_frequency / min_frequency) ** exponent).expand(dim, -1).clone()  # (D, K)
        if learned_frequencies:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.mlp = nn.Sequential(
            nn.Linear(dim * (2 * num_frequencies + 1), emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.null = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, cond: Tensor) -> Tensor:
        """Embed float vectors (B, D) -> (B, emb_dim); rows with NaN get the null embedding."""
        if not cond.dtype.is_floating_point or cond.ndim != 2 or cond.shape[1] != self.dim:
            raise ValueError(f"cond must be a float tensor of shape [B, {self.dim}], got {cond.dtype} {tuple(cond.shape)}")
        is_null = torch.isnan(cond).any(dim=1, keepdim=True)  # (B, 1)
        v = torch.nan_to_num(cond.float(), nan=0.0)  # (B, D)
        args = v[:, :, None] * self.freqs[None]  # (B, D, K)
        features = torch.cat([v[:, :, None], torch.cos(args), torch.sin(args)], dim=-1).flatten(1)  # (B, D * (2K + 1))
        emb = self.mlp(features.to(self.mlp[0].weight.dtype))  # (B, emb_dim)
        return torch.where(is_null, self.null.to(emb.dtype), emb)
