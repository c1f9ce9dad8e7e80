"""Images to files and back: [-1, 1] tensors as uint8 grids and PNG files (through the one output writer)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid, save_image

from difflab.utils.files import write_output


def to_uint8_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """[-1, 1] images [N, C, H, W] -> one uint8 grid [3 or 1, H', W'] with a 2-pixel border."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, key: str | None = None) -> Path:
    """Write [-1, 1] images as one PNG grid through the one output writer (`utils.files`: atomic, a full disk
    named with `key`; an earlier grid of the same name is replaced); returns the path."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    pixels = (images.float().clamp(-1, 1) + 1) / 2
    return write_output(path, lambda file: save_image(pixels, file, format="png", nrow=nrow, padding=2, pad_value=1.0),
                        key=key, overwrite=True)


def write_png(image: Tensor, path: str | Path, key: str | None = None) -> Path:
    """One [-1, 1] image [C, H, W] as an 8-bit PNG through the one output writer (atomic: a kill never leaves a
    partial image under the real name; a full disk named with `key`)."""
    pixels = (image.float().clamp(-1, 1) + 1) / 2
    return write_output(path, lambda file: save_image(pixels, file, format="png"), key=key, overwrite=True)


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
