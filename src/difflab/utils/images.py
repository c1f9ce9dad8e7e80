"""Images to files and back: [-1, 1] tensors as uint8 grids and PNG files, written through the one output writer
(`utils.files.write_output`), each with the `parameters` text chunk of the settings that made it when given
(`difflab.utils.pnginfo`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor
from torchvision.utils import make_grid

from difflab.utils.files import write_output
from difflab.utils.pnginfo import Parameters, png_text


def to_uint8_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """[-1, 1] images [N, C, H, W] -> one uint8 grid [3 or 1, H', W'] with a 2-pixel border."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None,
              parameters: Parameters | str | None = None, key: str | None = None) -> Path:
    """Write [-1, 1] images as one PNG grid (2-pixel white borders) through `write_uint8`, with `parameters` in its
    `parameters` chunk when given (an earlier grid of the same name is replaced); returns the path."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return write_uint8(_quantize(grid), path, parameters, key)


def write_png(image: Tensor, path: str | Path, parameters: Parameters | str | None = None,
              key: str | None = None) -> Path:
    """One [-1, 1] image [C, H, W] as an 8-bit PNG (a grey image as three equal channels) through `write_uint8`
    (atomic: a kill never leaves a partial image under the real name); `parameters` (the settings that made it) go
    into its `parameters` text chunk."""
    return write_uint8(png_pixels(image), path, parameters, key)


def png_pixels(image: Tensor) -> np.ndarray:
    """The uint8 pixels [H, W, 3] `write_png` writes for a [-1, 1] image [C, H, W]."""
    return _quantize(make_grid((image.float().clamp(-1, 1) + 1) / 2))


def _quantize(grid: Tensor) -> np.ndarray:
    """[0, 1] [C, H, W] -> uint8 [H, W, C], rounded as torchvision's `save_image` rounds (x * 255 + 0.5)."""
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


def write_uint8(array: np.ndarray, path: str | Path, parameters: Parameters | str | None = None,
                key: str | None = None) -> Path:
    """uint8 [H, W, C] (or [H, W]) as a PNG at `path` with the `parameters` chunk when given: every PNG of difflab
    goes through here, and from here through the one output writer (`write_output`: atomic, a full disk named with
    `key`; an earlier file of the same name is replaced)."""
    info = PngInfo()
    for name, text in png_text(parameters).items():
        info.add_text(name, text)
    image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    return write_output(path, lambda file: image.save(file, format="png", pnginfo=info), key=key, overwrite=True)


def png_levels(images: Tensor) -> Tensor:
    """[-1, 1] images as `write_png` stores and `read_png` reads them back: rounded to 8-bit levels (the same ops,
    so the values are equal bit for bit)."""
    levels = ((images.float().clamp(-1, 1) + 1) / 2).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return levels.to(torch.float32).mul(2.0 / 255.0).sub(1.0)


def read_png(path: str | Path, channels: int) -> Tensor:
    """An 8-bit image file as [channels, H, W] in [-1, 1], as `write_png` wrote it (it stores a grey image as three
    equal channels)."""
    with Image.open(path) as img:
        array = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.float().mul(2.0 / 255.0).sub(1.0)
