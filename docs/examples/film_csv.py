"""Write a tiny thin-film-style data set: photographs with a region of interest and measured values in a CSV.

`python docs/examples/film_csv.py data/film --n 240` writes `data/film/images/<i>.png` (96 x 72 pixels: a noisy
frame around the region of interest at top 16, left 8, height 40, width 80) and `data/film/film.csv` with the
columns `filepath, x1, x2, x3, x4`. Inside the region, a shape of `difflab.data.shapes` is drawn whose centre,
size, red level and background are x1..x4 (raw units), so the values can be read back from the pixels; outside
it the frame is noise that carries no information (what `data.roi` crops away).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difflab.data.shapes import draw_shapes, random_shapes

ROI = (16, 8, 40, 80)  # top, left, height, width
SIZE = (96, 72)        # width, height of each photograph
COLUMNS = {"x1": 0, "x2": 2, "x3": 4, "x4": 7}  # -> the shapes attributes cx, size, r, background


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=240, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    labels, attributes = random_shapes(args.n, args.seed)
    shapes = (draw_shapes(labels, attributes, 40) * 255).round().to(torch.uint8)  # (n, 3, 40, 40)
    rng = np.random.default_rng(args.seed)
    top, left, height, width = ROI
    lines = ["filepath," + ",".join(COLUMNS)]
    for i in range(args.n):
        frame = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)  # noise outside the ROI
        inside = Image.fromarray(shapes[i].permute(1, 2, 0).numpy()).resize((width, height), Image.Resampling.BICUBIC)
        frame[top : top + height, left : left + width] = np.asarray(inside)
        Image.fromarray(frame).save(args.out / "images" / f"{i:04d}.png")
        values = [f"{float(attributes[i, k]):.4f}" for k in COLUMNS.values()]
        lines.append(f"images/{i:04d}.png," + ",".join(values))
    (args.out / "film.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.n} images and {args.out / 'film.csv'} (columns {', '.join(COLUMNS)}; ROI {list(ROI)})")


if __name__ == "__main__":
    main()
