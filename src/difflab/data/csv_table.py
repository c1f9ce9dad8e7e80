"""Images listed in a CSV file with a vector of measured values per image: `filepath, x1, ..., xD`.

`python train.py model=cond_vector data=csv data.csv=<file> data.roi=[678,0,767,2452] data.resolution=128
data.columns=[x1,...,x8]`: each image is cropped to the region of interest (top, left, height, width),
resized to resolution x resolution (bicubic), and its values are z-scored with the training split's
statistics (`difflab.data.vectors.CondStats`). Paths are relative to the CSV's folder unless
`data.image_root` is given. Every bad input is a clear error naming the row or the file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from difflab.data.base import ImageDataModule, check_config, split_indices
from difflab.data.files import Batch, CorruptDataError, CorruptImageError, DataNotFoundError, to_model_range
from difflab.data.files import ImageFileDataset, describe_error, to_mode, upright
from difflab.data.vectors import F32_MAX, CondStats
from difflab.errors import ConfigError
from difflab.utils.tables import HOW_TO_GET, numeric_columns, read_rows

log = logging.getLogger(__name__)

def read_table(path: Path, path_column: str | None, columns: Sequence[str] | None, key: str = "data.csv",
               min_rows: int = 2, exact: bool = False) -> tuple[list[str], list[str], Tensor]:
    """(value column names, image paths, raw values float64 [N, D]); errors name the file, row and column.

    Without `path_column` the table holds values only (paths empty); with `exact`, a column other than the
    path and value columns is an error (not ignored). Without `columns` (`data.columns=null`), the value columns
    are the numeric ones of the header (`utils.tables.numeric_columns`), said in the log. Every value must be a
    number that float32 (the models' dtype) holds."""
    if not path.is_file():
        how = HOW_TO_GET if key == "data.csv" else f"`{key}` must name a CSV file."
        raise DataNotFoundError.for_path(path, key, how, "CSV file")
    header, rows = read_rows(path, key)
    if not columns:
        columns, left_out = numeric_columns(header, rows, path_column)
        log.info("%s: data.columns=null, so the value columns are the numeric columns of its header: %s%s", path,
                 columns, f" (left out, not numbers in the first row: {left_out})" if left_out else "")
    columns = list(columns)
    named = [c for c in [path_column, *columns] if c is not None]
    missing, unknown = [c for c in named if c not in header], [h for h in header if h not in named]
    if missing or (exact and unknown):
        keys = "config keys `data.path_column`, `data.columns`" if key == "data.csv" else f"config key `{key}`"
        extra = f"; column(s) {unknown} are not {named}" if exact and unknown else ""
        raise ConfigError(f"{path}: column(s) {missing} not in the header {header}{extra} ({keys}).")
    check_config(len(columns) > 0, "data.columns", f"{path} has no numeric value column besides '{path_column}'")
    at = {h: i for i, h in enumerate(header)}
    files = [_cell(values[at[path_column]], path_column, path, line) if path_column else "" for line, values in rows]
    values = [[_number(cells[at[c]], c, path, line) for c in columns] for line, cells in rows]
    if len(values) < min_rows:
        raise CorruptDataError.for_file(path, f"{len(values)} data row(s); need at least {min_rows}", "Add rows to the CSV.")
    return columns, files, torch.tensor(values, dtype=torch.float64).reshape(len(values), len(columns))


def _cell(value: str, column: str, path: Path, line: int) -> str:
    if not value:
        raise CorruptDataError.for_file(path, f"row {line}: empty value in column '{column}'", "Fix or remove that row.")
    return value


def _number(text: str, column: str, path: Path, line: int) -> float:
    text = _cell(text, column, path, line)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CorruptDataError.for_file(path, f"row {line}: column '{column}' holds {text!r}, not a finite number",
                                        "Fix or remove that row.")
    if abs(value) > F32_MAX:
        raise CorruptDataError.for_file(path, f"row {line}: column '{column}' holds {text}, beyond the largest float32 "
                                        f"value ({F32_MAX:.4g}), the models' number type", "Fix or rescale that column.")
    return value


class ROIImageDataset(ImageFileDataset):
    """Image files cropped to a region of interest and resized (squashed) to [C, R, R], with a condition vector each."""

    def __init__(self, root: Path, files: list[str], cond: Tensor, roi: Sequence[int] | None, resolution: int,
                 channels: int, rows: list[int] | None) -> None:
        super().__init__(root, files, None, resolution, channels, center_crop=False)
        self.cond, self.roi, self.rows = cond.to(torch.float32), None if roi is None else tuple(int(v) for v in roi), rows

    def describe(self, index: int) -> str:
        return super().describe(index) + ("" if self.rows is None else f" (CSV row {self.rows[index]})")

    def crop_box(self, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """PIL's (left, upper, right, lower) of the ROI; a ValueError when it does not fit in an image of `size`."""
        if self.roi is None:
            return None
        top, left, height, width = self.roi
        w, h = size
        if top < 0 or left < 0 or top + height > h or left + width > w:
            raise ValueError(f"the ROI (top {top}, left {left}, height {height}, width {width}; config key `data.roi`) "
                             f"lies outside the {w}x{h} (width x height) image")
        return left, top, left + width, top + height

    def _decode(self, index: int) -> np.ndarray:
        """Decode, crop to the ROI and resize file `index` to uint8 [R, R, C]."""
        with Image.open(self.root / self.files[index]) as img:
            img = upright(img)  # the ROI is given on the image as it is seen
            box = self.crop_box(img.size)
            img = to_mode(img.crop(box) if box else img, self.channels)
            img = img.resize((self.resolution, self.resolution), Image.Resampling.BICUBIC)
            return np.array(img, dtype=np.uint8).reshape(self.resolution, self.resolution, -1)

    def __getitem__(self, index: int) -> Batch:
        return {"image": to_model_range(self.load(index)), "cond": self.cond[index]}


class CSVDataModule(ImageDataModule):
    """Images named in a CSV with value columns; batches carry "cond" [B, D] (z-scored with train statistics)."""

    def __init__(
        self,
        csv: str,
        columns: Sequence[str] | None = None,
        path_column: str = "filepath",
        image_root: str | None = None,
        roi: Sequence[int] | None = None,
        resolution: int = 128,
        channels: int = 3,
        normalize: bool = True,
        val_fraction: float = 0.05,
        verify: bool = False,
        cond_dim: int | None = None,
        num_classes: int | None = None,
        name: str | None = None,
        **loader: Any,  # batch_size, num_workers, seed, pin_memory, persistent_workers, drop_last (ImageDataModule)
    ) -> None:
        self.csv = Path(csv).expanduser()
        check_config(num_classes is None, "data.num_classes", "the CSV data set has no class labels; leave it null")
        check_config(roi is None or (len(roi) == 4 and int(roi[2]) > 0 and int(roi[3]) > 0), "data.roi",
                     f"{roi}; use [top, left, height, width] with positive height and width, or null")
        check_config(cond_dim is None or not columns or cond_dim == len(columns), "data.cond_dim",
                     f"{cond_dim}, but data.columns names {len(columns or [])} columns")
        super().__init__(name=name or self.csv.stem, channels=channels, resolution=resolution, num_classes=None,
                         class_names=None, **loader)
        self.columns = list(columns) if columns else None
        self.path_column, self.roi = path_column, None if roi is None else [int(v) for v in roi]
        self.image_root = Path(image_root).expanduser() if image_root else self.csv.parent
        self.normalize, self.val_fraction, self.verify = bool(normalize), float(val_fraction), bool(verify)
        self.cond_dim = cond_dim or (len(columns) if columns else None)
        self.cond_stats: CondStats | None = None

    def file_dataset(self, path: Path, channels: int | None = None) -> Dataset:
        """One image file cropped to `data.roi` and resized like the training images (e.g. an img2img input)."""
        return ROIImageDataset(path.parent, [path.name], torch.zeros(1, 0), self.roi, self.resolution,
                               channels or self.channels, None)

    def preprocessing(self) -> dict[str, Any]:
        return {"data": self.name, "resolution": self.resolution, "roi": self.roi, "center_crop": False,
                "resize": "bicubic"}

    def _check_files(self, files: list[str]) -> None:
        """Every listed image exists (a DataNotFoundError naming the rows and files otherwise)."""
        absent = [(i + 2, f) for i, f in enumerate(files) if not (self.image_root / f).is_file()]
        if absent:
            shown = "; ".join(f"row {line}: {self.image_root / f}" for line, f in absent[:5])
            raise DataNotFoundError(f"{len(absent)} image file(s) listed in {self.csv} (config key `data.csv`) do not "
                                    f"exist: {shown}{' ...' if len(absent) > 5 else ''}. Paths are relative to "
                                    f"`data.image_root` ({self.image_root}).")

    def build_splits(self) -> tuple[Dataset, Dataset]:
        """Read and check the table, split it, and z-score the values with the train split's statistics."""
        columns, files, values = read_table(self.csv, self.path_column, self.columns)
        check_config(self.cond_dim in (None, len(columns)), "data.cond_dim", f"{self.cond_dim}, but {self.csv} has "
                     f"{len(columns)} value columns {columns}; leave data.cond_dim at its default")
        self.columns, self.cond_dim = columns, len(columns)
        self._check_files(files)
        rows = list(range(2, len(files) + 2))
        full = ROIImageDataset(self.image_root, files, values.float(), self.roi, self.resolution, self.channels, rows)
        bad = full.find_bad_files() if self.verify else [p for p in [_first_problem(full)] if p]
        if bad:
            raise CorruptImageError(f"{len(bad)} of {len(files)} images listed in {self.csv} cannot be used; fix or "
                                    "remove them:\n  " + "\n  ".join(bad))
        train, val = split_indices(len(files), self.val_fraction, self.seed)
        self.cond_stats = CondStats.from_values(values[train], columns, self.normalize, f"the train split of {self.csv}")
        cond = self.cond_stats.encode(values)
        return tuple(ROIImageDataset(self.image_root, [files[i] for i in idx.tolist()], cond[idx], self.roi,
                                     self.resolution, self.channels, [rows[i] for i in idx.tolist()])
                     for idx in (train, val))


def _first_problem(dataset: ROIImageDataset) -> str | None:
    """A cheap early check at setup: the first image decodes and fits the ROI."""
    try:
        dataset._decode(0)
    except Exception as e:  # PIL raises many types
        return f"{dataset.describe(0)}: {describe_error(e)}"
    return None

