"""Procedurally drawn shapes whose attributes form an 8-d vector: vector conditioning testable offline.

Each RGB image shows one shape (class label: ellipse, rectangle, diamond) of one colour on a grey
background. Its 8 attributes, drawn uniformly from `RANGES` by a seeded generator, are

    cx, cy      centre, as a fraction of the image width / height
    size        std of the shape's x coordinate (its second moment), fraction of the width
    aspect      std of y / std of x
    r, g, b     shape colour in [0, 1]
    background  grey level in [0, 1]

`size` and `aspect` are defined through moments so that they mean the same for every shape type: the
unit shape's E[x^2] is 1/4 (ellipse), 1/3 (rectangle), 1/6 (diamond), so the half-width is
a = size / sqrt(E[x^2]) and the half-height a * aspect. `measure_shapes` recovers all 8 attributes from
pixels (centroid, second moments, mean colour of the shape, median of the border; a pixel is in the shape
when its grey level is above the midpoint of background and shape), exactly up to the pixel grid; it is
the oracle for the regressor and for generated images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from difflab.data.base import ImageDataModule, check_config, split_indices
from difflab.data.vectors import CondStats, VectorImageDataset

SHAPES = ("ellipse", "rectangle", "diamond")
ATTRIBUTES = ("cx", "cy", "size", "aspect", "r", "g", "b", "background")
RANGES = {"cx": (0.35, 0.65), "cy": (0.35, 0.65), "size": (0.07, 0.11), "aspect": (0.7, 1.3),
          "r": (0.55, 1.0), "g": (0.55, 1.0), "b": (0.55, 1.0), "background": (0.0, 0.3)}
SECOND_MOMENT = (1 / 4, 1 / 3, 1 / 6)  # E[x^2] of the unit ellipse, square and diamond (uniform density)
__all__ = ["ATTRIBUTES", "RANGES", "SHAPES", "ShapesDataModule", "attribute_error", "draw_shapes",
           "measure_shapes", "random_shapes"]
THRESHOLD = 0.125  # a pixel belongs to the shape when its grey level exceeds the background by this much


def random_shapes(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(labels int64 [n], attributes float32 [n, 8] in `ATTRIBUTES` order), uniform over `RANGES`."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(SHAPES), (n,), generator=gen)
    lo, hi = (torch.tensor([RANGES[a][i] for a in ATTRIBUTES]) for i in (0, 1))  # (8,), (8,)
    attributes = lo + (hi - lo) * torch.rand(n, len(ATTRIBUTES), generator=gen)  # (n, 8)
    return labels, attributes


def _grid(resolution: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates u (x) and v (y) in (0, 1): [R, R] each."""
    t = (torch.arange(resolution, dtype=torch.float32, device=device) + 0.5) / resolution
    v, u = torch.meshgrid(t, t, indexing="ij")
    return u, v


def draw_shapes(labels: Tensor, attributes: Tensor, resolution: int) -> Tensor:
    """Render the shapes as float images [n, 3, R, R] in [0, 1] (hard edges: a pixel is in or out by its centre)."""
    u, v = _grid(resolution)
    cx, cy, size, aspect, r, g, b, bg = (attributes[:, i, None, None] for i in range(8))  # each (n, 1, 1)
    moment = torch.tensor(SECOND_MOMENT)[labels][:, None, None]  # (n, 1, 1)
    half_w = size / moment.sqrt()
    dx, dy = (u - cx).abs() / half_w, (v - cy).abs() / (half_w * aspect)  # (n, R, R)
    lab = labels[:, None, None]
    inside = torch.where(lab == 0, dx**2 + dy**2 <= 1, torch.where(lab == 1, torch.maximum(dx, dy) <= 1, dx + dy <= 1))
    colour = torch.stack([r, g, b], dim=1)  # (n, 3, 1, 1)
    return torch.where(inside[:, None], colour, bg[:, None].expand_as(colour))  # (n, 3, R, R)


def measure_shapes(images: Tensor) -> Tensor:
    """The 8 attributes [n, 8] of images [n, 3, R, R] in [-1, 1], measured from the pixels (see the module docstring)."""
    x = (images.float().clamp(-1, 1) + 1) / 2  # (n, 3, R, R) in [0, 1]
    res = x.shape[-1]
    grey = x.mean(1)  # (n, R, R)
    border = torch.cat([grey[:, 0], grey[:, -1], grey[:, 1:-1, 0], grey[:, 1:-1, -1]], dim=1)  # (n, 4R - 4)
    bg = border.median(dim=1).values  # (n,)
    rough = grey > bg[:, None, None] + THRESHOLD  # (n, R, R)
    fg = torch.where(rough, grey, torch.nan).flatten(1).nanmedian(1).values  # (n,) the shape's grey level
    fg = torch.where(fg.isnan(), bg + 2 * THRESHOLD, fg)
    w = (grey > (bg + fg)[:, None, None] / 2).float()  # (n, R, R) the shape's pixels: same as `rough` when clean
    count = w.sum((1, 2)).clamp_min(1.0)  # (n,)
    u, v = _grid(res, x.device)
    cx, cy = (w * u).sum((1, 2)) / count, (w * v).sum((1, 2)) / count
    var_x = (w * (u - cx[:, None, None]) ** 2).sum((1, 2)) / count
    var_y = (w * (v - cy[:, None, None]) ** 2).sum((1, 2)) / count
    colour = (w[:, None] * x).sum((2, 3)) / count[:, None]  # (n, 3)
    size, aspect = var_x.sqrt(), (var_y / var_x.clamp_min(1e-12)).sqrt()
    return torch.stack([cx, cy, size, aspect, *colour.unbind(1), bg], dim=1)  # (n, 8)


class ShapesDataModule(ImageDataModule):
    """`num_samples` seeded random shapes; batches carry "label" (shape type) and "cond" (8 attributes, z-scored)."""

    def __init__(
        self,
        resolution: int = 32,
        num_samples: int = 5000,
        val_fraction: float = 0.1,
        normalize: bool = True,
        channels: int = 3,
        num_classes: int = 3,
        cond_dim: int = 8,
        **loader: Any,  # batch_size, num_workers, seed, pin_memory, persistent_workers, drop_last (ImageDataModule)
    ) -> None:
        self.check_fixed("channels", channels, 3, "shapes")
        self.check_fixed("num_classes", num_classes, len(SHAPES), "shapes")
        self.check_fixed("cond_dim", cond_dim, len(ATTRIBUTES), "shapes")
        check_config(num_samples >= 2, "data.num_samples", f"{num_samples} must be >= 2")
        super().__init__(name="shapes", channels=3, resolution=resolution, num_classes=len(SHAPES),
                         class_names=list(SHAPES), **loader)
        self.num_samples, self.val_fraction, self.normalize = int(num_samples), float(val_fraction), bool(normalize)
        self.columns = list(ATTRIBUTES)
        self.cond_dim = len(ATTRIBUTES)
        self.cond_stats: CondStats | None = None

    def build_splits(self) -> tuple[Dataset, Dataset]:
        """Draw the shapes (8-bit, in memory), split them, and z-score the attributes with the train split's statistics."""
        labels, attributes = random_shapes(self.num_samples, self.seed)
        images = (draw_shapes(labels, attributes, self.resolution) * 255).round().to(torch.uint8)
        train, val = split_indices(self.num_samples, self.val_fraction, self.seed, labels)
        self.cond_stats = CondStats.from_values(attributes[train], self.columns, self.normalize, "the shapes train split")
        cond = self.cond_stats.encode(attributes)
        return tuple(VectorImageDataset(images[i], labels[i], cond[i], self.resolution) for i in (train, val))


def attribute_error(measured: Tensor, requested: Tensor, stats: CondStats) -> tuple[float, float]:
    """Mean absolute error between raw attribute vectors [n, 8]: (raw units, std units of `stats`)."""
    diff = (measured.float() - requested.float()).abs()
    return float(diff.mean()), float((diff / torch.tensor(stats.std)).mean())


