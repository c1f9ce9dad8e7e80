"""Neural networks (nn.Modules only); they know nothing about diffusion."""

from difflab.nets.embeddings import (
    ClassEmbedding,
    TimestepEmbedding,
    VectorEmbedding,
    timestep_embedding,
)
from difflab.nets.unet import UNet

__all__ = ["ClassEmbedding", "TimestepEmbedding", "UNet", "VectorEmbedding", "timestep_embedding"]
