"""Image-caption pairs: a folder of images with same-named `.txt` captions, or a JSONL / CSV index.

    data.root=<folder>        a.png + a.txt, sub/b.jpg + sub/b.txt, ...  (searched recursively)
    data.root=<index.jsonl>   one {"path": "...", "caption": "..."} per line (also "file_name"/"image", "text")
    data.root=<index.csv>     a header with path and caption columns (same aliases)

Paths in an index are relative to the index's folder (or absolute). Batches hold "image" [B, C, R, R] in
[-1, 1] and "caption" (a list of B strings). `python -m difflab.cli.prepare_captions` writes such an index.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from difflab.data.files import Batch, CorruptDataError, DataNotFoundError
from difflab.data.files import EXTENSIONS, ImageFileDataset, list_images
from difflab.data.image_folder import ImageFolderDataModule

PATH_KEYS, CAPTION_KEYS = ("path", "file_name", "image"), ("caption", "text")
HOW_TO_GET = ("Point data.root at a folder of images with same-named .txt captions (a.png + a.txt), or at a "
              ".jsonl / .csv index of path and caption (e.g. written by `python -m difflab.cli.prepare_captions`).")


def _field(row: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if row.get(key) is not None:
            return str(row[key])
    raise CorruptDataError(f"{where}: no {' / '.join(keys)} field in {sorted(row)}; every row needs a path and a caption")


def read_index(index: Path) -> list[tuple[str, str]]:
    """(image path, caption) rows of a .jsonl or .csv index; a bad row is an error naming its line."""
    rows: list[tuple[str, str]] = []
    if index.suffix.lower() == ".csv":
        with open(index, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                where = f"{index}, line {line}"
                rows.append((_field(row, PATH_KEYS, where), _field(row, CAPTION_KEYS, where)))
        return rows
    for line, text in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise CorruptDataError(f"{index}, line {line}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise CorruptDataError(f"{index}, line {line}: not a JSON object")
        where = f"{index}, line {line}"
        rows.append((_field(row, PATH_KEYS, where), _field(row, CAPTION_KEYS, where)))
    return rows


def read_caption_folder(root: Path, extensions: tuple[str, ...] = EXTENSIONS) -> list[tuple[str, str]]:
    """(relative image path, caption) of every image in `root` with a same-named .txt; raises listing those without."""
    rows, missing = [], []
    for name in list_images(root, extensions):
        txt = (root / name).with_suffix(".txt")
        if txt.is_file():
            rows.append((name, txt.read_text(encoding="utf-8").strip()))
        else:
            missing.append(name)
    if missing:
        raise CorruptDataError(f"{len(missing)} image(s) under '{root}' have no same-named .txt caption, e.g. "
                               f"{', '.join(missing[:5])}; add the captions or list the pairs in a .jsonl/.csv index")
    return rows


def read_pairs(root: Path, extensions: tuple[str, ...] = EXTENSIONS) -> tuple[Path, list[tuple[str, str]]]:
    """(folder the image paths are relative to, rows) for a caption folder or an index file."""
    if root.is_dir():
        return root, read_caption_folder(root, extensions)
    if root.is_file() and root.suffix.lower() in (".jsonl", ".json", ".csv"):
        return root.parent, read_index(root)
    raise DataNotFoundError.for_path(root, "data.root", HOW_TO_GET, "A caption folder or a .jsonl/.csv index")


class CaptionedImageDataset(ImageFileDataset):
    """`ImageFileDataset` items with their "caption"."""

    def __init__(self, root: Path, files: list[str], captions: dict[str, str], *args: Any, **kwargs: Any) -> None:
        super().__init__(root, files, None, *args, **kwargs)
        self.captions = [captions[f] for f in files]

    def __getitem__(self, index: int) -> Batch:
        return {**super().__getitem__(index), "caption": self.captions[index]}


class ImageTextDataModule(ImageFolderDataModule):
    """Image-caption pairs from a caption folder or an index (see the module docstring); no class labels."""

    def __init__(self, root: str, hflip: bool = False, **kwargs: Any) -> None:
        super().__init__(root, hflip=hflip, labels_from_subfolders=False, num_classes=None, **kwargs)
        self.image_root = self.root
        self.captions: dict[str, str] = {}

    def _find_files(self) -> list[str]:
        self.image_root, rows = read_pairs(self.root, self.extensions)
        if not rows:
            raise DataNotFoundError.for_path(self.root, "data.root", HOW_TO_GET, "Image-caption pairs")
        self.captions = dict(rows)
        return [path for path, _ in rows]

    def _dataset(self, files: list[str], labels: list[int] | None, hflip: bool) -> Dataset:
        return CaptionedImageDataset(self.image_root, files, self.captions, self.resolution, self.channels,
                                     self.center_crop, hflip)
