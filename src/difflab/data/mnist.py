"""MNIST from the standard IDX files (gzipped or not), parsed with numpy."""

from __future__ import annotations

from typing import Any

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from difflab.data.base import ImageDataModule, InMemoryImageDataset, official_or_split
from difflab.data.files import CorruptDataError, DataNotFoundError

IDX_UBYTE = 0x08  # IDX type code of unsigned bytes
FILES = {  # split -> (images, labels) base names; ".gz" optional
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "Put the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzipped or not) directly in that "
    "folder or in its MNIST/raw subfolder. Get them from a mirror of "
    "http://yann.lecun.com/exdb/mnist/, or on a machine with internet run "
    "`torchvision.datasets.MNIST(root, download=True)` and copy the folder over."
)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with `ndim` dimensions (checks magic number and size)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptDataError.for_file(path, f"{type(e).__name__}: {e}") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, IDX_UBYTE, ndim]):
        expected = f"0x{(IDX_UBYTE << 8) | ndim:08X}"
        raise CorruptDataError.for_file(
            path, f"not an IDX file of {ndim}-d unsigned bytes (magic number should be {expected})"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise CorruptDataError.for_file(
            path, f"header says shape {shape} ({size} bytes) but it holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_file(folders: list[Path], base: str) -> Path | None:
    """The first existing `base` or `base.gz` in `folders`, else None."""
    for folder in folders:
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_split(folders: list[Path], split: str, root: Path) -> tuple[Tensor, Tensor] | None:
    """(images uint8 [N, 1, 28, 28], labels int64 [N]) of `split`; None when both are absent."""
    paths = [find_file(folders, base) for base in FILES[split]]
    if paths == [None, None]:
        return None
    if None in paths:
        missing = FILES[split][paths.index(None)]
        what = f"MNIST file {missing}[.gz]"
        raise DataNotFoundError.for_path(root, "data.root", HOW_TO_GET, what)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise CorruptDataError.for_file(
            paths[1], f"{len(labels)} labels for {len(images)} images in {paths[0].name}"
        )
    if labels.size and labels.max() > 9:
        raise CorruptDataError.for_file(paths[1], f"label {labels.max()} is outside 0..9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class MNISTDataModule(ImageDataModule):
    """MNIST 28x28 digits resized to `resolution`; val = t10k unless `val_fraction` is set."""

    def __init__(
        self,
        root: str,
        resolution: int = 32,
        val_fraction: float | None = None,
        channels: int = 1,
        num_classes: int = 10,
        **loader: Any,  # batch_size, num_workers, seed, pin_memory, persistent_workers, drop_last (ImageDataModule)
    ) -> None:
        self.check_fixed("channels", channels, 1, "MNIST")
        self.check_fixed("num_classes", num_classes, 10, "MNIST")
        super().__init__(
            name="mnist",
            channels=1,
            resolution=resolution,
            num_classes=10,
            class_names=[str(d) for d in range(10)],
            **loader,
        )
        self.root = Path(root).expanduser()
        self.val_fraction = val_fraction

    def build_splits(self) -> tuple[Dataset, Dataset]:
        """Read the IDX files; t10k is val, unless asked to split or only one set exists."""
        folders = [self.root, self.root / "MNIST" / "raw"]
        train, test = (load_split(folders, split, self.root) for split in ("train", "t10k"))
        if train is None and test is None:
            raise DataNotFoundError.for_path(self.root, "data.root", HOW_TO_GET, "MNIST IDX files")
        source = f"MNIST in '{self.root}'"
        train, val = official_or_split(train, test, self.val_fraction, self.seed, source)
        return (
            InMemoryImageDataset(*train, self.resolution),
            InMemoryImageDataset(*val, self.resolution),
        )
