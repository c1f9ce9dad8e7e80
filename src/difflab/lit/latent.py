"""Latent-space helpers of latent diffusion: the latent scale factor from data, and the latent cache.

LDM (Rombach et al. 2022, App. G): for the KL-regularised first stage, the latents are rescaled by
scale_factor = 1 / std(z) (over all elements of the encoded training images), so that the scaled
latents have unit variance and schedules designed for [-1, 1] data apply.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset

from difflab.utils.cluster import shard, world
from difflab.nets.autoencoder import LatentAutoencoder
from difflab.utils.checkpoint_files import atomic_save

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


# ---------------------------------------------------------------------------------------------------
# Latent caching (data.cache_latents=true): encode the training split once, train stage 2 from the file
# ---------------------------------------------------------------------------------------------------

CACHE_FORMAT = 1


def weights_hash(module: torch.nn.Module, length: int = 12) -> str:
    """sha256 of every parameter and buffer (names, shapes, bytes) except the scale factor: the cache key of an autoencoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name.endswith(("scale_factor", "shift_factor")):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:length]


def latent_cache_path(cache_dir: str | Path, meta: dict[str, Any]) -> Path:
    """`latents-<dataset>-<split>-<res>px-n<count>[-hflip]-<autoencoder hash>.pt`."""
    flip = "-hflip" if meta["hflip"] else ""
    return Path(cache_dir) / f"latents-{meta['dataset']}-{meta['split']}-{meta['resolution']}px-n{meta['count']}{flip}-{meta['autoencoder']}.pt"


@torch.no_grad()
def encode_split(autoencoder: LatentAutoencoder, datamodule: Any, split: str, hflip: bool, batch_size: int = 64) -> dict[str, Tensor]:
    """Posterior mean and std [N, c, h, w] (float16) of every image of `split` (and of its mirror images when `hflip`)."""
    device = autoencoder.scale_factor.device
    out: dict[str, list[Tensor]] = {"mean": [], "std": [], "mean_flip": [], "std_flip": []}
    n = len(datamodule.split_dataset(split))
    for images, _ in datamodule.iter_images(split, 0, n, batch_size):
        for suffix, x in (("", images), ("_flip", images.flip(-1))) if hflip else (("", images),):
            mean, std = autoencoder.posterior(x.to(device))
            out["mean" + suffix].append(mean.half().cpu())
            out["std" + suffix].append(std.half().cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}


class CachedLatents(Dataset):
    """Training items {"latent_mean", "latent_std"[, "label"]} from a cache (a mirrored copy picked with p = 1/2)."""

    def __init__(self, blob: dict[str, Tensor], labels: Tensor | None) -> None:
        self.blob, self.labels = blob, labels
        self.hflip = "mean_flip" in blob

    def __len__(self) -> int:
        return self.blob["mean"].shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        flip = "_flip" if self.hflip and torch.rand(()) < 0.5 else ""
        item = {"latent_mean": self.blob["mean" + flip][index].float(), "latent_std": self.blob["std" + flip][index].float()}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


def load_or_build_cache(autoencoder: LatentAutoencoder, datamodule: Any, cache_dir: str | Path) -> tuple[Path, dict[str, Tensor]]:
    """The cache of the training split for this autoencoder: loaded when its key matches, else encoded and
    written atomically (rank 0; the other ranks wait, then load)."""
    train = datamodule.split_dataset("train")
    meta = {"dataset": datamodule.name, "split": "train", "resolution": int(datamodule.resolution), "count": len(train),
            "hflip": bool(getattr(datamodule, "hflip", False)), "autoencoder": weights_hash(autoencoder)}
    path = latent_cache_path(cache_dir, meta)
    rank, size = world()
    if not path.is_file() and rank == 0:
        log.info("encoding %d training images of %s into the latent cache %s", len(train), datamodule.name, path)
        blob = encode_split(autoencoder, datamodule, "train", meta["hflip"])
        atomic_save({"format": CACHE_FORMAT, "meta": meta, **blob}, path)
    if size > 1:
        dist.barrier()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != CACHE_FORMAT or saved.get("meta") != meta:
        raise ValueError(f"latent cache '{path}' does not match this data set/autoencoder ({saved.get('meta')} vs {meta}); delete it")
    log.info("latent cache: %s", path)
    return path, {k: v for k, v in saved.items() if isinstance(v, Tensor)}


def cached_train_set(datamodule: Any, autoencoder: LatentAutoencoder, cache_dir: str | Path) -> CachedLatents:
    """The training split of `datamodule` as cached latents instead of images (its loader batches and shards it as usual)."""
    _, blob = load_or_build_cache(autoencoder, datamodule, cache_dir)
    labels = getattr(datamodule.split_dataset("train"), "labels", None)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    return CachedLatents(blob, labels)
