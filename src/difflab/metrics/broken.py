"""Broken samples: solid, saturated or speckled images, judged against the real data.

A sample is broken when one of four per-image statistics leaves the range the real images of a split
show (thresholds: the real extreme plus half the real spread beyond it, so that no real image of
that split counts as broken, and in practice none of the other split either):

    std         pixel standard deviation                      below the real minimum -> solid
    frac_high   share of pixels at the top value (255)        above the real maximum -> saturated (white)
    frac_low    share of pixels at the bottom value (0)       above the real maximum -> saturated (black)
    speckle     mean |x - blur3x3(x)| / mean |x - mean(x)|     above the real maximum -> high-frequency speckle

Images are first quantised to uint8 like the saved PNGs (so scoring the PNGs gives the same rate). The
speckle statistic is the share of the image's contrast that lives in the highest spatial frequencies: a
digit is smooth (its edges cover few pixels), a speckled sample is not. The rate needs no pretrained
network, so it is computed wherever samples are scored, even without the Inception weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

STATS = ("std", "frac_high", "frac_low", "speckle")
MARGIN = 0.5  # of the real spread (extreme - median), added beyond the real extreme


def image_stats(images: Tensor) -> dict[str, Tensor]:
    """The four statistics of images in [-1, 1] (float) or uint8, [N, C, H, W] -> {name: [N]}."""
    if images.dtype == torch.uint8:
        q = images.float()
    else:
        q = ((images.float().clamp(-1, 1) + 1) * 127.5).round()  # the uint8 levels of the saved PNGs
    x = q / 255.0  # (N, C, H, W) in [0, 1]
    n = x.shape[0]
    flat = x.reshape(n, -1)
    c = x.shape[1]
    kernel = torch.full((c, 1, 3, 3), 1.0 / 9.0, dtype=x.dtype, device=x.device)
    blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    high = (x - blur).abs().reshape(n, -1).mean(1)
    contrast = (flat - flat.mean(1, keepdim=True)).abs().mean(1)
    return {
        "std": flat.std(1, unbiased=False),
        "frac_high": (q.reshape(n, -1) >= 255).float().mean(1),
        "frac_low": (q.reshape(n, -1) <= 0).float().mean(1),
        "speckle": high / contrast.clamp_min(1.0 / 255.0),
    }


@dataclass(frozen=True)
class BrokenThresholds:
    """Limits of the four statistics, from real images (`from_images`); recorded with every rate."""

    std_min: float
    frac_high_max: float
    frac_low_max: float
    speckle_max: float
    split: str = "val"
    count: int = 0

    @classmethod
    def from_images(cls, batches: Iterable[Tensor], split: str = "val") -> BrokenThresholds:
        """Thresholds of the real images in `batches` ([B, C, H, W] in [-1, 1] or uint8)."""
        parts = [image_stats(b) for b in batches]
        if not parts:
            raise ValueError("broken_rate needs real images to take its thresholds from; the split is empty")
        s = {k: torch.cat([p[k] for p in parts]).double() for k in STATS}
        lo = lambda v: float(v.min() - MARGIN * (v.median() - v.min()))  # noqa: E731
        hi = lambda v: float(v.max() + MARGIN * (v.max() - v.median()))  # noqa: E731
        frac_high_max = hi(s["frac_high"]) if float(s["frac_high"].max()) > 0 else 0.0
        return cls(std_min=max(lo(s["std"]), 0.0), frac_high_max=frac_high_max, frac_low_max=hi(s["frac_low"]),
                   speckle_max=hi(s["speckle"]), split=split, count=len(s["std"]))

    def broken(self, images: Tensor) -> dict[str, Tensor]:
        """Per-image flags {solid, saturated, speckle, broken} ([N] bool) of images in [-1, 1] or uint8."""
        s = image_stats(images)
        solid = s["std"] < self.std_min
        saturated = (s["frac_high"] > self.frac_high_max + 1e-9) | (s["frac_low"] > self.frac_low_max)
        speckle = (s["speckle"] > self.speckle_max) & ~solid
        return {"solid": solid, "saturated": saturated, "speckle": speckle, "broken": solid | saturated | speckle}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BrokenRate(Metric):
    """Share of broken samples (see the module docstring), summed over ranks."""

    full_state_update = False

    def __init__(self, thresholds: BrokenThresholds, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thresholds = thresholds
        self.add_state("broken", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor) -> None:  # type: ignore[override]
        """Add generated images ([-1, 1] float or uint8, [N, C, H, W])."""
        flags = self.thresholds.broken(images.to(self.device))
        self.broken += flags["broken"].sum().double()
        self.total += images.shape[0]

    def compute(self) -> Tensor:
        """Broken images / all images (NaN before any update)."""
        return self.broken / self.total if self.total > 0 else torch.tensor(float("nan"), dtype=torch.float64)
