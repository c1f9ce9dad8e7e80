"""Image files: the errors of data on disk, listing and decoding image files into the model range.

The lowest module of `difflab.data`: every data module and every command that reads an image file
(img2img inputs, predict.py, evaluate.py images=) decodes it here: upright (EXIF orientation), 16-bit and float
images scaled to 8 bits, transparency on white, CMYK and palettes converted (`upright`, `to_mode`).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from difflab.errors import CorruptFileError, MissingFileError

Batch = dict[str, Tensor]


class DataNotFoundError(MissingFileError):
    """A data set is missing on disk; the message names the path, config key and how to get it."""

    @classmethod
    def for_path(cls, path: str | Path, config_key: str, how_to_get: str, what: str = "Data") -> DataNotFoundError:
        """Build the standard message for `what` missing at `path`, set by `config_key`."""
        return super().for_path(path, config_key, how_to_get, what)


class CorruptDataError(CorruptFileError):
    """A data file exists but cannot be parsed; the message names the file."""

    @classmethod
    def for_file(cls, path: str | Path, reason: str, hint: str = "") -> CorruptDataError:
        """Build the standard message for the unreadable file `path`."""
        return super().for_file(path, reason, hint or "Delete or replace the file (re-download or re-extract the data set).")


class CorruptImageError(CorruptDataError):
    """An image file cannot be decoded; the message names the file."""


def to_model_range(images: Tensor) -> Tensor:
    """Map uint8 images in [0, 255] or float images in [0, 1] to float32 in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)
    return images.to(torch.float32).mul(2.0).sub_(1.0).clamp_(-1.0, 1.0)


EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

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


HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # integer grey of 16 bits (PNG, TIFF; "I" for older Pillow)
FLOAT_SLACK = 0.01  # float images may overshoot [0, 1] by this much (then clipped); beyond it they are refused


def upright(img: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: its EXIF orientation (a camera's rotation or mirror) applied."""
    return ImageOps.exif_transpose(img) or img


def eight_bit(img: Image.Image) -> Image.Image:
    """Grey images of more than 8 bits as 8-bit "L": 16-bit integers scaled by 255 / 65535 (x / 257, rounded: 32896
    -> 128, 65535 -> 255), float images ("F", e.g. a float TIFF, values in [0, 1]) by 255; other modes as they are
    (Pillow reads 16-bit RGB, RGBA and grey + alpha PNGs as 8-bit already). A float image with NaN, infinity or
    values well outside [0, 1] is a ValueError, never a guess."""
    if img.mode in HIGH_DEPTH:
        values = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("the float image holds NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
            raise ValueError(f"a float image must hold values in [0, 1], and this one spans [{lo:g}, {hi:g}]")
        return Image.fromarray(np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8), "L")
    return img


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert to 8-bit RGB or L (`eight_bit` first: 16-bit and float images scaled, not clipped), putting any
    transparency (alpha, a palette's or a grey image's transparent colour) on a white background; CMYK through
    Pillow's conversion."""
    img = eight_bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
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
            img = fit_square(to_mode(upright(img), self.channels), self.resolution, self.center_crop)
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
