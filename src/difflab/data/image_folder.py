"""Any folder (recursively) or .zip of images, resized and centre-cropped to a square."""

from __future__ import annotations

from typing import Any

import io
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from difflab.data.base import (
    Batch,
    CorruptImageError,
    DataNotFoundError,
    ImageDataModule,
    check_config,
    split_indices,
    to_model_range,
)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
HOW_TO_GET = (
    "Point data.root at a folder of images (searched recursively) or at a .zip of images, "
    "e.g. `python train.py data=image_folder data.root=/path/to/images`."
)


def _visible(parts: Sequence[str]) -> bool:
    """False for hidden files/folders and macOS zip debris (.DS_Store, __MACOSX, ._x.png)."""
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def list_images(root: Path, extensions: tuple[str, ...]) -> list[str]:
    """Sorted relative POSIX paths of the images in folder or zip `root`."""
    if root.is_dir():
        names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    else:
        with zipfile.ZipFile(root) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    return sorted(
        n for n in names
        if n.lower().endswith(extensions) and _visible(PurePosixPath(n).parts)
    )


def fit_square(img: Image.Image, resolution: int, center_crop: bool) -> Image.Image:
    """Resize the shorter side to `resolution` and centre-crop, or squash when not `center_crop`."""
    if not center_crop:
        return img.resize((resolution, resolution), Image.Resampling.BICUBIC)
    w, h = img.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    img = img.resize(size, Image.Resampling.BICUBIC) if size != img.size else img
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def describe_error(e: Exception) -> str:
    """A short reason for a failed decode (PIL's own messages name an in-memory buffer)."""
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image (unknown format or a damaged header)"
    return f"{type(e).__name__}: {e}"


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert to RGB or L, putting any transparency on a white background."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    return img.convert("RGB" if channels == 3 else "L")


class ImageFileDataset(Dataset):
    """Images from a folder or a zip (opened lazily in each worker), as [C, R, R] in [-1, 1]."""

    def __init__(
        self,
        root: Path,
        files: list[str],
        labels: list[int] | None,
        resolution: int,
        channels: int,
        center_crop: bool = True,
        hflip: bool = False,
    ) -> None:
        self.root, self.files, self.labels = root, files, labels
        self.resolution, self.channels = resolution, channels
        self.center_crop, self.hflip = center_crop, hflip
        self.in_zip = not root.is_dir()
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_zip_pid": -1}  # zip handles do not cross processes

    def __len__(self) -> int:
        return len(self.files)

    def _read_bytes(self, name: str) -> bytes:
        if not self.in_zip:
            return (self.root / name).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():  # forked workers reopen their own
            self._zip, self._zip_pid = zipfile.ZipFile(self.root), os.getpid()
        return self._zip.read(name)

    def describe(self, index: int) -> str:
        """Human-readable location of file `index` (inside the zip when there is one)."""
        name = self.files[index]
        return f"{self.root}::{name}" if self.in_zip else str(self.root / name)

    def _decode(self, index: int) -> np.ndarray:
        """Decode file `index` to uint8 [R, R, C]; PIL's own exceptions pass through."""
        with Image.open(io.BytesIO(self._read_bytes(self.files[index]))) as img:
            img.draft("RGB" if self.channels == 3 else "L", (self.resolution,) * 2)  # fast JPEG
            img = fit_square(to_mode(img, self.channels), self.resolution, self.center_crop)
            return np.array(img, dtype=np.uint8).reshape(self.resolution, self.resolution, -1)

    def load(self, index: int) -> torch.Tensor:
        """Decode file `index` to uint8 [C, R, R]; any failure becomes a CorruptImageError."""
        try:
            array = self._decode(index)
        except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            raise CorruptImageError.for_file(
                self.describe(index),
                describe_error(e),
                "Delete or replace it; set data.verify=true to list every bad file at setup.",
            ) from None
        return torch.from_numpy(array).permute(2, 0, 1)

    def __getitem__(self, index: int) -> Batch:
        image = to_model_range(self.load(index))
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        item = {"image": image}
        if self.labels is not None:
            item["label"] = torch.tensor(self.labels[index], dtype=torch.int64)
        return item

    def find_bad_files(self, threads: int = 8) -> list[str]:
        """Decode every file (in threads) and return the messages of those that fail."""

        def check(index: int) -> str | None:
            try:
                self._decode(index)
            except Exception as e:  # same net as `load`
                return describe_error(e)
            return None

        with ThreadPoolExecutor(max(1, min(threads, os.cpu_count() or 1))) as pool:
            problems = list(pool.map(check, range(len(self))))
        return [f"{self.describe(i)}: {p}" for i, p in enumerate(problems) if p is not None]


class ImageFolderDataModule(ImageDataModule):
    """Images under `root` (folder or .zip); labels from first-level subfolders when asked."""

    how_to_get = HOW_TO_GET  # the hint of a missing-data error (presets name their official sources)

    def __init__(
        self,
        root: str,
        resolution: int = 64,
        channels: int = 3,
        hflip: bool = True,
        center_crop: bool = True,
        labels_from_subfolders: bool = False,
        num_classes: int | None = None,
        val_fraction: float = 0.05,
        extensions: Sequence[str] = EXTENSIONS,
        verify: bool = False,
        name: str | None = None,
        **loader: Any,  # batch_size, num_workers, seed, pin_memory, persistent_workers, drop_last (ImageDataModule)
    ) -> None:
        check_config(
            labels_from_subfolders or num_classes is None,
            "data.num_classes",
            f"{num_classes} given but data.labels_from_subfolders=false; set it to true, "
            "or set data.num_classes=null",
        )
        self.root = Path(root).expanduser()
        super().__init__(
            name=name or self.root.resolve().stem,
            channels=channels,
            resolution=resolution,
            num_classes=num_classes,
            class_names=None,  # the subfolder names, found at setup
            **loader,
        )
        self.hflip, self.center_crop = bool(hflip), bool(center_crop)
        self.labels_from_subfolders, self.verify = bool(labels_from_subfolders), bool(verify)
        self.val_fraction = float(val_fraction)
        self.extensions = tuple("." + str(e).lower().lstrip(".") for e in extensions)

    def _find_files(self) -> list[str]:
        """The sorted image files under the folder or zip `root`."""
        if not (self.root.is_dir() or zipfile.is_zipfile(self.root)):
            what = "A folder or .zip of images"
            if self.root.is_file():
                what = f"A readable .zip (the file is not a zip archive; {what.lower()})"
            raise DataNotFoundError.for_path(self.root, "data.root", self.how_to_get, what)
        files = list_images(self.root, self.extensions)
        if not files:
            raise DataNotFoundError.for_path(
                self.root, "data.root", self.how_to_get, f"Images ({', '.join(self.extensions)})"
            )
        return files

    def _labels(self, files: list[str]) -> list[int] | None:
        """Class index of each file from its first-level subfolder; sets `class_names`."""
        if not self.labels_from_subfolders:
            return None
        parts = [PurePosixPath(f).parts for f in files]
        if len({p[0] for p in parts}) == 1 and all(len(p) > 2 for p in parts):
            parts = [p[1:] for p in parts]  # one wrapping folder (common in zips): enter it
        top = [p[0] for p in parts if len(p) == 1]
        if top:
            raise ValueError(
                f"data.labels_from_subfolders=true, but {len(top)} image(s) lie directly in "
                f"'{self.root}' (e.g. {top[0]}); move them into a class subfolder."
            )
        names = sorted({p[0] for p in parts})
        check_config(
            self.num_classes == len(names),
            "data.num_classes",
            f"{self.num_classes}, but '{self.root}' has {len(names)} class subfolders "
            f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); "
            f"set data.num_classes={len(names)}",
        )
        self.class_names = names
        index = {n: i for i, n in enumerate(names)}
        return [index[p[0]] for p in parts]

    def _dataset(self, files: list[str], labels: list[int] | None, hflip: bool) -> ImageFileDataset:
        return ImageFileDataset(
            self.root, files, labels, self.resolution, self.channels, self.center_crop, hflip
        )

    def build_splits(self) -> tuple[Dataset, Dataset]:
        """List (and optionally verify) the images, then split them (stratified by label if any)."""
        files = self._find_files()
        labels = self._labels(files)
        if self.verify:
            bad = self._dataset(files, None, hflip=False).find_bad_files()
            if bad:
                raise CorruptImageError(
                    f"{len(bad)} of {len(files)} images under '{self.root}' cannot be read "
                    "(found by data.verify=true); delete or replace them:\n  " + "\n  ".join(bad)
                )
        label_tensor = None if labels is None else torch.tensor(labels)
        splits = split_indices(len(files), self.val_fraction, self.seed, label_tensor)
        train, val = (
            self._dataset(
                [files[i] for i in idx.tolist()],
                None if labels is None else [labels[i] for i in idx.tolist()],
                hflip=self.hflip and is_train,
            )
            for idx, is_train in zip(splits, (True, False))
        )
        return train, val
