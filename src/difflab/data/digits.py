"""The 1,797 real 8x8 handwritten digits shipped inside scikit-learn; works offline."""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import load_digits  # local import: sklearn is slow to import
from torch.utils.data import Dataset

from difflab.data.base import ImageDataModule, InMemoryImageDataset, split_indices


class DigitsDataModule(ImageDataModule):
    """sklearn's digits (0..16) upsampled to `resolution`; labels 0-9; seeded stratified split."""

    def __init__(
        self,
        resolution: int = 16,
        val_fraction: float = 0.1,
        channels: int = 1,
        num_classes: int = 10,
        **loader: Any,  # batch_size, num_workers, seed, pin_memory, persistent_workers, drop_last (ImageDataModule)
    ) -> None:
        self.check_fixed("channels", channels, 1, "digits")
        self.check_fixed("num_classes", num_classes, 10, "digits")
        super().__init__(
            name="digits",
            channels=1,
            resolution=resolution,
            num_classes=10,
            class_names=[str(d) for d in range(10)],
            **loader,
        )
        self.val_fraction = float(val_fraction)

    def build_splits(self) -> tuple[Dataset, Dataset]:
        """Load the digits into memory as [N, 1, 8, 8] floats in [0, 1] and split them."""
        digits = load_digits()
        images = torch.from_numpy(digits.images).to(torch.float32).div_(16.0).unsqueeze(1)
        labels = torch.from_numpy(digits.target).to(torch.int64)  # (N,)
        train, val = split_indices(len(labels), self.val_fraction, self.seed, labels)
        return (
            InMemoryImageDataset(images[train], labels[train], self.resolution),
            InMemoryImageDataset(images[val], labels[val], self.resolution),
        )
