"""Latent-space helpers of latent diffusion: the latent scale factor from data.

LDM (Rombach et al. 2022, App. G): for the KL-regularised first stage, the latents are rescaled by
scale_factor = 1 / std(z) (over all elements of the encoded training images), so that the scaled
latents have unit variance and schedules designed for [-1, 1] data apply.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.distributed as dist

from difflab.metrics.suite import shard, world
from difflab.nets.autoencoder import LatentAutoencoder

log = logging.getLogger(__name__)


@torch.no_grad()
def latent_moments(autoencoder: LatentAutoencoder, datamodule: Any, n: int, device: torch.device | str,
                   batch_size: int = 64, split: str = "train") -> tuple[float, float, int]:
    """(mean, std, number of elements) of the unscaled posterior samples z of the first `n` images of `split`.

    Each rank encodes its shard (posterior noise seeded by image index) and the sums are all-reduced,
    so every rank gets the same value whatever the process count.
    """
    available = len(datamodule.split_dataset(split))
    n = available if n <= 0 else min(int(n), available)
    rank, size = world()
    part = shard(n, rank, size)
    device = torch.device(device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # sum z, sum z^2, count
    for images, index in datamodule.iter_images(split, part.start, part.stop, batch_size):
        gen = torch.Generator(device).manual_seed(int(index[0]))
        z = autoencoder.encode_unscaled(images.to(device), sample=True, generator=gen).double()
        sums += torch.stack([z.sum(), z.pow(2).sum(), torch.tensor(float(z.numel()), dtype=torch.float64, device=device)])
    if size > 1:
        dist.all_reduce(sums)
    total, squares, count = sums.tolist()
    if count < 2:
        raise ValueError(f"cannot estimate the latent scale factor from {int(count)} latent values (no training images?)")
    mean = total / count
    var = (squares - count * mean**2) / (count - 1)
    return mean, math.sqrt(max(var, 0.0)), int(count)


def estimate_scale_factor(autoencoder: LatentAutoencoder, datamodule: Any, n: int, device: torch.device | str) -> float:
    """1 / std(z) over the first `n` training images (LDM App. G); logged."""
    mean, std, count = latent_moments(autoencoder, datamodule, n, device)
    if not std > 0:
        raise ValueError("the training latents have zero variance; the latent scale factor is undefined")
    value = 1.0 / std
    log.info("latent scale factor 1/std(z) = %.5f (mean %.4f, std %.4f over %d latent values)", value, mean, std, count)
    return value
