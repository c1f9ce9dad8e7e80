"""Images to files: [-1, 1] tensors as uint8 grids and PNG files (through the one output writer)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
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
