"""Shared machinery of difflab's data modules: errors, preprocessing, splits, loaders.

Every data module yields batches ``{"image": float32 [B, C, H, W] in [-1, 1], "label": int64 [B]}``
("label" only when the data set has labels) and exposes ``channels``, ``resolution``,
``num_classes``, ``class_names`` and ``name``.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate

from difflab.data.files import Batch, ImageFileDataset, to_model_range
from difflab.errors import ConfigError
from difflab.utils.cluster import run_seed

log = logging.getLogger(__name__)



@rank_zero_only
def log_rank_zero(message: str) -> None:
    """Log a warning once (rank 0 only) so DDP runs do not repeat it per process."""
    log.warning(message)


def check_config(ok: bool, key: str, message: str) -> None:
    """Raise a ConfigError (a ValueError) naming the config key `key` when `ok` is false."""
    if not ok:
        raise ConfigError(f"Bad value for config key `{key}`: {message}")


def resize_square(images: Tensor, resolution: int) -> Tensor:
    """Resize images [B, C, h, w] in [-1, 1] to [B, C, R, R] (bilinear, antialiased)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    out = F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp_(-1.0, 1.0)


def random_hflip(images: Tensor) -> Tensor:
    """Flip each image of [B, C, H, W] left-right with probability 1/2."""
    flip = torch.rand(images.shape[0]) < 0.5  # (B,)
    if flip.any():
        images = images.clone()
        images[flip] = images[flip].flip(-1)
    return images


def split_indices(
    n: int, val_fraction: float, seed: int, labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Seeded, disjoint (train, val) index split of range(n); stratified by `labels` when given."""
    check_config(0.0 < val_fraction < 1.0, "data.val_fraction", f"{val_fraction} must be in (0, 1)")
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise ValueError(
            f"Cannot hold out {n_val} of {n} examples for validation (config key "
            "`data.val_fraction`): the data set needs at least 2 examples; add data or lower it."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if labels is not None:
        # classes contiguous, shuffled within; evenly spaced picks give each class its share
        perm = perm[torch.argsort(labels[perm], stable=True)]
        picks = ((torch.arange(n_val) + 0.5) * n / n_val).long()
    else:
        picks = torch.arange(n_val)
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[perm[picks]] = True
    return torch.nonzero(~is_val).squeeze(1), torch.nonzero(is_val).squeeze(1)


def official_or_split(
    train: tuple[Tensor, Tensor] | None,
    test: tuple[Tensor, Tensor] | None,
    val_fraction: float | None,
    seed: int,
    source: str,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(train, val) of (images, labels): the official test set as val, or a seeded stratified split.

    The train set is split when `val_fraction` is set or the test set is absent; when only the
    test set exists it is split instead (with a log line naming `source`).
    """
    fraction = 0.1 if val_fraction is None else val_fraction
    if train is None or test is None:
        which = "test" if train is None else "train"
        log_rank_zero(
            f"{source}: only the {which} split was found; training on "
            f"{1 - fraction:.0%} of it and validating on the rest."
        )
        train, test = train or test, None
    if test is None or val_fraction is not None:
        images, labels = train
        tr, va = split_indices(len(labels), fraction, seed, labels)
        train, test = (images[tr], labels[tr]), (images[va], labels[va])
    return train, test


def collate_batch(samples: Sequence[Batch] | Batch) -> Batch:
    """Collate per-item dicts; pass through a dict that a dataset already batched."""
    if isinstance(samples, Mapping):
        return dict(samples)
    return default_collate(list(samples))


class InMemoryImageDataset(Dataset):
    """Images held as one tensor [N, C, h, w] (uint8, or float in [0, 1]), batched on the fly."""

    def __init__(
        self, images: Tensor, labels: Tensor | None, resolution: int, hflip: bool = False
    ) -> None:
        self.images, self.resolution, self.hflip = images, resolution, hflip
        self.labels = None if labels is None else labels.to(torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """Return a whole preprocessed batch at once (no per-item Python work)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = to_model_range(self.images[idx])
        images = resize_square(images, self.resolution)
        batch = {"image": random_hflip(images) if self.hflip else images}
        if self.labels is not None:
            batch["label"] = self.labels[idx]
        return batch

    def __getitem__(self, index: int) -> Batch:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class GlobalBatchSampler(DistributedSampler):
    """Rank `rank`'s share of each global batch of one seeded permutation, so N processes see the batches of one.

    The epoch's order is DistributedSampler's (``randperm`` seeded by ``seed + epoch``); it is cut into
    global batches of `global_batch_size` (a short last one dropped with `drop_last`), and rank r takes
    items ``[r * b, (r + 1) * b)`` of each, with ``b = global_batch_size / num_replicas``. A DataLoader
    with batch size ``b`` over this sampler yields the per-rank slices of the single-process batches.
    Being a DistributedSampler, Lightning neither replaces nor re-wraps it under DDP.
    """

    def __init__(self, dataset: Dataset, global_batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        check_config(global_batch_size % num_replicas == 0, "data.batch_size",
                     f"{global_batch_size} (the global batch) must be divisible by the {num_replicas} processes")
        self.global_batch_size, self.per_rank = global_batch_size, global_batch_size // num_replicas
        n, rest = len(dataset), len(dataset) % global_batch_size  # type: ignore[arg-type]
        # without drop_last a short last global batch is kept when every rank gets an item of it
        self.num_batches = n // global_batch_size + int(not drop_last and rest >= num_replicas)
        self.num_samples = self.num_batches * self.per_rank  # an upper bound when the last batch is short
        self.resume = (0, 0)  # (epoch, global batches of it already trained)

    def resume_at(self, batches_done: int) -> None:
        """Continue a run that trained `batches_done` global batches: its epoch starts at the next batch."""
        self.resume = divmod(batches_done, self.num_batches) if self.num_batches else (0, 0)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        skip = self.resume[1] if self.epoch == self.resume[0] else 0
        for start in range(skip * self.global_batch_size, self.num_batches * self.global_batch_size,
                           self.global_batch_size):
            batch = order[start : start + self.global_batch_size]
            # a short last global batch is split as evenly as possible (every rank keeps a step)
            lo, hi = len(batch) * self.rank // self.num_replicas, len(batch) * (self.rank + 1) // self.num_replicas
            yield from batch[lo:hi].tolist()

    def __len__(self) -> int:
        return self.num_samples


class ImageDataModule(L.LightningDataModule, ABC):
    """Base class: common kwargs, contract attributes, idempotent setup and the two loaders."""

    center_crop = True  # image files: shorter side resized to `resolution`, then centre-cropped (else squashed)

    def __init__(
        self,
        *,
        name: str,
        channels: int,
        resolution: int,
        num_classes: int | None,
        class_names: list[str] | None,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        drop_last: bool = True,
        cache_latents: bool = False,
    ) -> None:
        super().__init__()
        check_config(channels in (1, 3), "data.channels", f"{channels}; use 1 (grey) or 3 (RGB)")
        check_config(resolution >= 1, "data.resolution", f"{resolution} must be a positive int")
        check_config(batch_size >= 1, "data.batch_size", f"{batch_size} must be >= 1")
        check_config(num_workers >= 0, "data.num_workers", f"{num_workers} must be >= 0")
        self.name, self.channels, self.resolution = name, int(channels), int(resolution)
        self.num_classes, self.class_names = num_classes, class_names
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        keep = persistent_workers is None or bool(persistent_workers)
        self.persistent_workers = self.num_workers > 0 and keep
        self.drop_last = bool(drop_last)
        self.cache_latents = bool(cache_latents)  # latent models: train from cached latents (see difflab.lit.latent)
        self.train_set_override: Callable[[], Dataset] | None = None  # set by the CLI for the latent cache
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @staticmethod
    def check_fixed(key: str, given: Any, expected: Any, dataset: str) -> None:
        """Validate a config value that a fixed data set determines (e.g. MNIST has 1 channel)."""
        check_config(given == expected, f"data.{key}", f"{given}; {dataset} has {key}={expected}")

    def file_dataset(self, path: Path, channels: int | None = None) -> Dataset:
        """One image file outside the data set (e.g. an img2img input) preprocessed as the training images are."""
        return ImageFileDataset(path.parent, [path.name], None, self.resolution, channels or self.channels,
                                center_crop=self.center_crop)

    def preprocessing(self) -> dict[str, Any]:
        """How `file_dataset` turns a file into a model input (recorded next to edited images)."""
        return {"data": self.name, "resolution": self.resolution, "center_crop": self.center_crop, "resize": "bicubic"}

    @abstractmethod
    def build_splits(self) -> tuple[Dataset, Dataset]:
        """Read the data and return (train, val) datasets; called once by `setup`."""

    def setup(self, stage: str | None = None) -> None:
        """Build the train/val datasets (once; later calls are no-ops)."""
        if self.train_set is None:
            self.train_set, self.val_set = self.build_splits()

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (with augmentation where the data set has any)."""
        self.setup("fit")
        train_set = self.train_set if self.train_set_override is None else self.train_set_override()
        n = len(train_set)
        if self.drop_last and n < self.batch_size:
            raise ValueError(
                f"The {self.name} train split has {n} examples, fewer than `data.batch_size`="
                f"{self.batch_size}, and `data.drop_last` is true, so no batch would be produced; "
                "lower data.batch_size or set data.drop_last=false."
            )
        world, rank = self._world()
        sampler = GlobalBatchSampler(train_set, self.batch_size, num_replicas=world, rank=rank,
                                     seed=run_seed(), drop_last=self.drop_last)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # a resumed run goes on with the batches of its epoch it has not trained yet
            sampler.resume_at(trainer.global_step * trainer.accumulate_grad_batches)
        return self._loader(train_set, shuffle=False, drop_last=False, sampler=sampler,
                            batch_size=sampler.per_rank)

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def val_dataloader(self) -> DataLoader:
        """Held-out batches in a fixed order, without augmentation."""
        self.setup("validate")
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def split_dataset(self, split: str) -> Dataset:
        """The 'train' or 'val' split without augmentation (the real images metrics compare against)."""
        self.setup("validate")
        check_config(split in ("train", "val"), "metrics.reference.split", f"{split!r}; use 'train' or 'val'")
        dataset = self.train_set if split == "train" else self.val_set
        if getattr(dataset, "hflip", False):
            dataset = copy.copy(dataset)
            dataset.hflip = False
        return dataset

    def iter_batches(self, split: str, start: int, stop: int, batch_size: int) -> Iterator[tuple[Batch, Tensor]]:
        """(batch, its indices in the split) for items start..stop-1 of `split`, in order, without augmentation."""
        subset = Subset(self.split_dataset(split), range(start, stop))
        loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
                            collate_fn=collate_batch)
        offset = start
        for batch in loader:
            n = batch["image"].shape[0]
            yield batch, torch.arange(offset, offset + n)
            offset += n

    def iter_images(self, split: str, start: int, stop: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(images [B, C, H, W] in [-1, 1], their indices in the split) for images start..stop-1 of `split`, in order."""
        for batch, index in self.iter_batches(split, start, stop, batch_size):
            yield batch["image"], index

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool, sampler: DistributedSampler | None = None,
                batch_size: int | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_batch,
        )
