"""What a model's `sample` / `edit` returns: the images, the record samples.json holds, and the files of a sample
folder (`Samples.save`: images/<index>.png, grid.png, conditions.csv, samples.json, sweep.png)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from difflab.api import checks
from difflab.utils.images import save_grid, to_uint8_grid, write_png
from difflab.utils.files import write_json, write_text

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """Images [n, C, H, W] in [-1, 1] (float32, CPU) with what made them.

    `record` is samples.json's content (the sampler, seed, NFE, conditions, ...); `rows` the requested condition of
    each image (conditions.csv, with what a regressor read back); `nrow` the grid's columns (a sweep's value count).
    """

    images: Tensor
    record: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    nrow: int | None = None
    plots: dict[str, Callable[[Path], Path]] = field(default_factory=dict)  # file name -> its writer (sweep.png)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nfe(self) -> int:
        """Network evaluations per image."""
        return int(self.record["nfe"])

    def to_pil(self) -> list[Image.Image]:
        """Each image as a PIL image (8 bits, L or RGB)."""
        out = []
        for img in self.images:
            array = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            out.append(Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array))
        return out

    def grid(self, nrow: int | None = None) -> Image.Image:
        """All images as one PIL grid (`nrow` columns; default the sample's own layout, else square)."""
        grid = to_uint8_grid(self.images, nrow or self.nrow).permute(1, 2, 0).numpy()
        return Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)

    def save(self, out_dir: str | Path, *, save_images: bool = True, overwrite: bool = False,
             key: str = "out_dir") -> dict[str, Path]:
        """Write the sample folder into `out_dir` (created; it must hold no earlier results unless `overwrite`):
        images/<index>.png (with `save_images`), grid.png, conditions.csv (one row per image, for conditioned
        models), plots, and samples.json last. Returns the paths written."""
        return self.write_files(checks.fresh_output(out_dir, key, overwrite), save_images=save_images)

    def write_files(self, out: Path, *, save_images: bool = True, images_written: bool = False) -> dict[str, Path]:
        """`save` into a folder already checked (sample.py writes the images batch by batch as they are made:
        `images_written`)."""
        paths: dict[str, Path] = {}
        if save_images:
            (out / "images").mkdir(exist_ok=True)
            for i, img in enumerate([] if images_written else self.images):
                write_png(img, out / "images" / f"{i:06d}.png")
            paths["images"] = out / "images"
        paths["grid"] = save_grid(self.images, out / "grid.png", nrow=self.nrow)
        record = dict(self.record)
        if self.rows:
            paths["conditions"] = write_conditions(self.rows, out / "conditions.csv", save_images)
            record["conditions"] = str(paths["conditions"])
        for name, writer in self.plots.items():
            paths[name] = writer(out / name)
        if "sweep.png" in paths and isinstance((record.get("measured") or {}).get("sweep"), dict):
            record["measured"] = {**record["measured"],
                                  "sweep": {**record["measured"]["sweep"], "plot": str(paths["sweep.png"])}}
        paths["record"] = write_json(out / "samples.json", record, key="out_dir")
        self.record = record
        log.info("wrote %d images and %s (NFE %d per image)", len(self), paths["grid"], self.nfe)
        return paths


def write_conditions(rows: list[dict[str, Any]], path: Path, with_files: bool) -> Path:
    """`conditions.csv` (through the one output writer): each image's file (images/<index>.png) and its requested
    condition."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["index", "file", *rows[0]])
    writer.writeheader()
    for i, row in enumerate(rows):
        writer.writerow({"index": i, "file": f"images/{i:06d}.png" if with_files else "", **row})
    return write_text(path, text.getvalue(), key="out_dir", overwrite=True)
