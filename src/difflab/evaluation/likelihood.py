"""Negative log-likelihood of real data in bits/dim through the probability-flow ODE (`metrics=nll`).

Song et al. 2021, Appendix D.2: 8-bit images are dequantised with uniform noise (v + u) / 256,
mapped to [-1, 1], and their log-density at the model's smallest noise level sigma_min is the
prior's log-density at sigma_max plus the integrated divergence (Hutchinson's estimator, one
probe per image, fixed along its trajectory). Image i of a split uses its own seed for the
dequantisation noise and the probe, so the estimate does not depend on the batching.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.likelihood import bits_per_dim, log_likelihood
from difflab.metrics.inception import to_uint8
from difflab.samplers.base import StackedGenerator
from difflab.samplers.generate import sample_seeds


def dequantize(images: Tensor, generator: StackedGenerator) -> Tensor:
    """[-1, 1] images -> their 8-bit values plus U[0, 1) noise, scaled back to [-1, 1) (float64)."""
    values = to_uint8(images).double()
    noise = generator.rand(values.shape, dtype=torch.float64)
    return (values + noise) / 128.0 - 1.0


def data_bits_per_dim(
    module: Any,
    datamodule: Any,
    *,
    split: str = "val",
    n: int | None = 128,
    batch_size: int = 64,
    estimator: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    seed: int = 0,
) -> dict[str, float]:
    """Mean bits/dim of the first `n` images of `split` (with its standard error and the mean NFE per batch)."""
    scheduler = module.scheduler
    sigma_min, sigma_max = float(scheduler.sigma_min), float(scheduler.sigma_max)
    prior_std = float(scheduler.prior_std(sigma_max))
    available = len(datamodule.split_dataset(split))
    n = available if n is None else min(int(n), available)
    device = torch.device(getattr(module, "device", "cpu"))
    bpd, nfes = [], []
    was_training = module.training
    module.eval()
    try:
        for images, index in datamodule.iter_images(split, 0, n, batch_size):
            gen = StackedGenerator(sample_seeds(seed, len(index), int(index[0])), "cpu")
            x = dequantize(images, gen).float().to(device)
            log_p, nfe = log_likelihood(module.denoiser, x, sigma_min, sigma_max, prior_std, estimator=estimator,
                                        generator=gen, rtol=rtol, atol=atol)
            bpd.append(bits_per_dim(log_p, x[0].numel()))
            nfes.append(nfe)
    finally:
        module.train(was_training)
    values = torch.cat(bpd)
    sem = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return {"bpd": float(values.mean()), "bpd_sem": sem, "nll_nfe": float(sum(nfes) / len(nfes)), "nll_images": float(n)}
