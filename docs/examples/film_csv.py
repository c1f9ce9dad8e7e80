"""Write a tiny thin-film-style data set: photographs with a region of interest and measured values in a CSV.

`python docs/examples/film_csv.py data/film --n 240` writes `data/film/images/<i>.png` (96 x 72 pixels: a noisy
frame around the region of interest at top 16, left 8, height 40, width 80) and `data/film/film.csv` with the
columns `filepath, x1, x2, x3, x4`. Inside the region, a shape of `difflab.data.shapes` is drawn whose centre,
size, red level and background are x1..x4 (raw units), so the values can be read back from the pixels; outside
it the frame is noise that carries no information (what `data.roi` crops away).

`--kind interference` draws a film patch instead, in physical units as measured thin-film data come
(`thickness_nm, index, wedge_nm, exposure`: hundreds of nm beside numbers near 1, the case z-scoring is for): the
patch's colour is the normal-incidence reflectance of a film of index n and thickness d on glass (Airy's two-beam
formula, Heavens, *Optical Properties of Thin Solid Films*, eq. 4.31, no absorption)

    R = (r1^2 + r2^2 + 2 r1 r2 cos D) / (1 + r1^2 r2^2 + 2 r1 r2 cos D),  D = 4 pi n d / lambda,
    r1 = (1 - n) / (1 + n),  r2 = (n - 1.52) / (n + 1.52),

at 620 / 540 / 460 nm for R, G, B, shown as sqrt(R / 0.2) times the exposure; the thickness grows linearly across
the patch by `wedge_nm`, so each patch shows its fringes (`experiment=thinfilm_normalization` runs on it).
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
FILM = {"thickness_nm": (150.0, 650.0), "index": (1.30, 2.00), "wedge_nm": (0.0, 250.0), "exposure": (0.6, 1.2)}
WAVELENGTHS = np.array([620.0, 540.0, 460.0])  # nm: R, G, B
GLASS = 1.52


def reflectance(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Normal-incidence reflectance [..., 3] of a film (index n, thickness d in nm) on glass at WAVELENGTHS."""
    r1, r2 = ((1 - n) / (1 + n))[..., None], ((n - GLASS) / (n + GLASS))[..., None]
    cos = np.cos(4 * np.pi * n[..., None] * d[..., None] / WAVELENGTHS)
    return (r1**2 + r2**2 + 2 * r1 * r2 * cos) / (1 + r1**2 * r2**2 + 2 * r1 * r2 * cos)


def film_patches(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` film patches uint8 [n, height, width, 3] of the ROI and their values [n, 4] (FILM's columns)."""
    rng = np.random.default_rng(seed + 1)
    height, width = ROI[2:]
    values = np.stack([rng.uniform(lo, hi, n) for lo, hi in FILM.values()], axis=1)
    thickness = values[:, 0, None, None] + values[:, 2, None, None] * np.linspace(0, 1, width)[None, None, :]
    thickness = np.repeat(thickness, height, axis=1)
    patch = np.sqrt(reflectance(np.broadcast_to(values[:, 1, None, None], thickness.shape), thickness) / 0.2)
    patch = np.clip(patch * values[:, 3, None, None, None] + 0.01 * rng.standard_normal(patch.shape), 0, 1)
    return (patch * 255).round().astype(np.uint8), values


def shape_patches(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` shapes of `difflab.data.shapes` uint8 [n, height, width, 3] of the ROI and their values [n, 4]."""
    labels, attributes = random_shapes(n, seed)
    shapes = (draw_shapes(labels, attributes, 40) * 255).round().to(torch.uint8)  # (n, 3, 40, 40)
    height, width = ROI[2:]
    patches = [np.asarray(Image.fromarray(s.permute(1, 2, 0).numpy()).resize((width, height), Image.Resampling.BICUBIC))
               for s in shapes]
    return np.stack(patches), attributes[:, list(COLUMNS.values())].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=240, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=["shapes", "interference"], default="shapes", help="what the ROI shows")
    args = parser.parse_args()
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    patches, values = (film_patches if args.kind == "interference" else shape_patches)(args.n, args.seed)
    columns = list(FILM if args.kind == "interference" else COLUMNS)
    rng = np.random.default_rng(args.seed)
    top, left, height, width = ROI
    lines = ["filepath," + ",".join(columns)]
    for i in range(args.n):
        frame = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)  # noise outside the ROI
        frame[top : top + height, left : left + width] = patches[i]
        Image.fromarray(frame).save(args.out / "images" / f"{i:04d}.png")
        lines.append(f"images/{i:04d}.png," + ",".join(f"{float(v):.4f}" for v in values[i]))
    (args.out / "film.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.n} images and {args.out / 'film.csv'} (columns {', '.join(columns)}; ROI {list(ROI)})")


if __name__ == "__main__":
    main()
