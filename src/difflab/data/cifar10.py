"""CIFAR-10 from the standard python-pickle release (cifar-10-batches-py)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from difflab.data.base import ImageDataModule, InMemoryImageDataset, official_or_split
from difflab.data.files import CorruptDataError, DataNotFoundError

FOLDER = "cifar-10-batches-py"
CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
NUMPY_GLOBALS = {"_reconstruct", "_frombuffer", "ndarray", "dtype"}  # what array pickles need
HOW_TO_GET = (
    "Download the python version (cifar-10-python.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there "
    "(`tar xzf cifar-10-python.tar.gz -C <root>`), giving <root>/cifar-10-batches-py/"
    "{data_batch_1..5, test_batch, batches.meta}; data.root may also point at that folder itself."
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, so a data file cannot run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        numpy_ok = module.split(".")[0] == "numpy" and name in NUMPY_GLOBALS
        if numpy_ok or (module, name) == ("_codecs", "encode"):  # py3 bytes at protocol 2
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")


def read_pickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    """Load one CIFAR pickle (bytes keys) and check that it holds `keys`."""
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means the file is damaged or not CIFAR
        raise CorruptDataError.for_file(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        found = list(data)[:10] if isinstance(data, dict) else type(data).__name__
        reason = f"expected a dict with keys {list(keys)}; got {found}"
        raise CorruptDataError.for_file(path, reason)
    return data


def read_batches(paths: list[Path]) -> tuple[Tensor, Tensor]:
    """Concatenate batches into (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    images, labels = [], []
    for path in paths:
        batch = read_pickle(path, (b"data", b"labels"))
        data, target = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(target) != len(data):
            raise CorruptDataError.for_file(
                path, f"data {data.shape} / {len(target)} labels; expected [N, 3072] and N labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        if target.size and not 0 <= target.min() <= target.max() <= 9:
            span = f"{target.min()}..{target.max()}"
            raise CorruptDataError.for_file(path, f"labels span {span}, not 0..9")
        labels.append(target.astype(np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def find_folder(root: Path) -> Path:
    """`root` itself or `root/cifar-10-batches-py`, whichever holds the batch files."""
    for folder in (root, root / FOLDER):
        if any((folder / f).is_file() for f in ("batches.meta", "test_batch", TRAIN_BATCHES[0])):
            return folder
    what = "CIFAR-10 batches"
    if (root / "cifar-10-python.tar.gz").is_file():
        what = "An extracted CIFAR-10 (only the .tar.gz is there; extract it)"
    raise DataNotFoundError.for_path(root, "data.root", HOW_TO_GET, what)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 32x32 RGB resized to `resolution`; val = test_batch unless `val_fraction` is set."""

    def __init__(
        self,
        root: str,
        resolution: int = 32,
        hflip: bool = True,
        val_fraction: float | None = None,
        channels: int = 3,
        num_classes: int = 10,
        **loader: Any,  # batch_size, num_workers, seed, pin_memory, persistent_workers, drop_last (ImageDataModule)
    ) -> None:
        self.check_fixed("channels", channels, 3, "CIFAR-10")
        self.check_fixed("num_classes", num_classes, 10, "CIFAR-10")
        super().__init__(
            name="cifar10",
            channels=3,
            resolution=resolution,
            num_classes=10,
            class_names=list(CLASS_NAMES),  # replaced by batches.meta at setup
            **loader,
        )
        self.root, self.hflip = Path(root).expanduser(), bool(hflip)
        self.val_fraction = val_fraction

    def build_splits(self) -> tuple[Dataset, Dataset]:
        """Read the batches; use test_batch as val, or split the train set when asked."""
        folder = find_folder(self.root)
        meta = folder / "batches.meta"
        if not meta.is_file():
            raise DataNotFoundError.for_path(meta, "data.root", HOW_TO_GET, "CIFAR-10 batches.meta")
        names = read_pickle(meta, (b"label_names",))[b"label_names"]
        if len(names) != 10:
            raise CorruptDataError.for_file(meta, f"{len(names)} label_names instead of 10")
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        missing = [b for b in TRAIN_BATCHES if not (folder / b).is_file()]
        if 0 < len(missing) < len(TRAIN_BATCHES):
            raise DataNotFoundError.for_path(
                folder / missing[0], "data.root", HOW_TO_GET, "CIFAR-10 training batch"
            )
        test_path = folder / "test_batch"
        test = read_batches([test_path]) if test_path.is_file() else None
        train = read_batches([folder / b for b in TRAIN_BATCHES]) if not missing else None
        source = f"CIFAR-10 in '{folder}'"
        train, val = official_or_split(train, test, self.val_fraction, self.seed, source)
        return (
            InMemoryImageDataset(*train, self.resolution, hflip=self.hflip),
            InMemoryImageDataset(*val, self.resolution),
        )
