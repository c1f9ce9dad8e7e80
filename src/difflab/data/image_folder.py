"""Any folder (recursively) or .zip of images, resized and centre-cropped to a square."""

from __future__ import annotations

from typing import Any

import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch
from torch.utils.data import Dataset

from difflab.data.base import ImageDataModule, check_config, split_indices
from difflab.data.files import EXTENSIONS, CorruptImageError, DataNotFoundError, ImageFileDataset, list_images

HOW_TO_GET = (
    "Point data.root at a folder of images (searched recursively) or at a .zip of images, "
    "e.g. `python train.py data=image_folder data.root=/path/to/images`."
)


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
