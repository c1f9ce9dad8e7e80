"""The comparison gallery: one labelled row of samples per table row, from each run's sample strip.

A run's metrics.json names its strip (`sample_strip`, the first samples of its final evaluation as one row of a
grid; `callbacks/metrics.py`), and the table row carries its path as `samples`. Rows without a strip (autoencoder
rows, records read from W&B) are left out. Strips are scaled up by a whole factor to at least `min_height` pixels,
so that 16-pixel digits stay visible, and labelled "variant | sampler steps".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from difflab.compare.table import MISSING, Row
from difflab.utils.files import write_output

log = logging.getLogger(__name__)

GALLERY = "gallery.png"


def row_label(row: Row) -> str:
    """'variant | sampler steps' of a table row (the gallery's and the W&B Table's caption)."""
    sampler = " ".join(str(x) for x in (row.get("sampler"), row.get("steps")) if x is not None)
    return f"{row.get('variant') or MISSING} | {sampler or MISSING}"


def gallery_rows(rows: Sequence[Row]) -> list[tuple[str, Path]]:
    """(label, strip path) of every row whose strip file exists."""
    found = []
    for row in rows:
        strip = row.get("samples")
        if strip and Path(strip).is_file():
            found.append((row_label(row), Path(strip)))
        elif strip:
            log.warning("gallery: the sample strip %s of %s is missing", strip, row.get("run_dir"))
    return found


def write_gallery(rows: Sequence[Row], path: str | Path, min_height: int = 64, key: str | None = None) -> Path | None:
    """Stack the rows' sample strips, each labelled on its left, into one PNG; None when no row has a strip."""
    found = gallery_rows(rows)
    if not found:
        return None
    strips = []
    for _, strip_path in found:
        with Image.open(strip_path) as img:
            strip = img.convert("RGB")
        factor = max(1, -(-min_height // strip.height))  # ceil: whole factors keep pixels sharp
        strips.append(strip.resize((strip.width * factor, strip.height * factor), Image.Resampling.NEAREST))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = 12 + max(int(draw.textlength(label, font=font)) for label, _ in found)
    width = label_width + max(s.width for s in strips)
    gallery = Image.new("RGB", (width, sum(s.height for s in strips)), "white")
    canvas, y = ImageDraw.Draw(gallery), 0
    for (label, _), strip in zip(found, strips):
        canvas.text((6, y + strip.height // 2), label, fill="black", font=font, anchor="lm")
        gallery.paste(strip, (label_width, y))
        y += strip.height
    return write_output(path, lambda file: gallery.save(file, format="PNG"), key=key, overwrite=True)
