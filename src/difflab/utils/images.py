"""Images to files and back: [-1, 1] tensors as uint8 grids and PNG files (written atomically, each with the
`parameters` text chunk of the settings that made it when given: `difflab.utils.pnginfo`)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor
from torchvision.utils import make_grid

from difflab.utils.pnginfo import Parameters, png_text


def to_uint8_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """[-1, 1] images [N, C, H, W] -> one uint8 grid [3 or 1, H', W'] with a 2-pixel border."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None,
              parameters: Parameters | str | None = None) -> Path:
    """Write [-1, 1] images as one PNG grid (2-pixel white borders), atomically, with `parameters` in its
    `parameters` chunk when given; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return write_uint8(_quantize(grid), path, parameters)


def write_png(image: Tensor, path: str | Path, parameters: Parameters | str | None = None) -> Path:
    """One [-1, 1] image [C, H, W] as an 8-bit PNG (a grey image as three equal channels), written to a temp file
    beside `path` and renamed onto it, so a kill never leaves a partial image under the real name; `parameters`
    (the settings that made it) go into its `parameters` text chunk."""
    return write_uint8(png_pixels(image), Path(path), parameters)


def png_pixels(image: Tensor) -> np.ndarray:
    """The uint8 pixels [H, W, 3] `write_png` writes for a [-1, 1] image [C, H, W]."""
    return _quantize(make_grid((image.float().clamp(-1, 1) + 1) / 2))


def _quantize(grid: Tensor) -> np.ndarray:
    """[0, 1] [C, H, W] -> uint8 [H, W, C], rounded as torchvision's `save_image` rounds (x * 255 + 0.5)."""
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


def write_uint8(array: np.ndarray, path: Path, parameters: Parameters | str | None = None) -> Path:
    """uint8 [H, W, C] (or [H, W]) as a PNG at `path`, atomically (temp file beside it, renamed), with the
    `parameters` chunk when given: the one PNG writer of difflab."""
    info = PngInfo()
    for key, text in png_text(parameters).items():
        info.add_text(key, text)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(
            tmp, format="png", pnginfo=info)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_png(path: str | Path, channels: int) -> Tensor:
    """An 8-bit image file as [channels, H, W] in [-1, 1], as `write_png` wrote it (it stores a grey image as three
    equal channels)."""
    with Image.open(path) as img:
        array = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.float().mul(2.0 / 255.0).sub(1.0)
