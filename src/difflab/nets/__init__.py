"""Neural networks (nn.Modules only); they know nothing about diffusion."""

from difflab.nets.autoencoder import KLAutoencoder, LatentAutoencoder
from difflab.nets.cnn import SmallCNN
from difflab.nets.embeddings import (
    ClassEmbedding,
    TimestepEmbedding,
    VectorEmbedding,
    timestep_embedding,
)
from difflab.nets.unet import UNet

__all__ = ["ClassEmbedding", "KLAutoencoder", "LatentAutoencoder", "SmallCNN", "TimestepEmbedding", "UNet", "VectorEmbedding", "timestep_embedding"]
