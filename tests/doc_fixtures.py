"""The fixtures of tests/e2e/test_documented_commands.py that stand for a documented placeholder: fake data sets
where the presets look, tiny random Stable Diffusion / SDXL folders, condition tables, prompt files. Each maker
writes into the folder it is given; `written(make)` turns it into a fixture built once per test module."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from doc_commands import Lab
from PIL import Image


def written(make: Callable[[Path], Path | None], name: str | None = None) -> Callable[[Lab], Path]:
    """A fixture that `make(folder)` writes into a fresh folder of its own (`name`, default: the function's)."""
    def build(lab: Lab) -> Path:
        folder = lab.root / "fixtures" / (name or make.__name__)
        folder.mkdir(parents=True)
        return make(folder) or folder
    return build


def random_pngs(folder: Path, n: int = 8, size: tuple[int, int] = (32, 32), ext: str = ".png") -> None:
    """`n` random RGB images of `size` (width, height)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i:06d}{ext}")


def ffhq(folder: Path) -> None:
    """Where data=ffhq looks: 16 random 64-pixel faces."""
    random_pngs(folder, 16, (64, 64))


def celeba(folder: Path) -> Path:
    """img_align_celeba.zip as CelebA ships it, of 16 random 178x218 JPEGs."""
    random_pngs(folder / "img_align_celeba", 16, (178, 218), ".jpg")
    with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as z:
        for file in sorted((folder / "img_align_celeba").iterdir()):
            z.write(file, f"img_align_celeba/{file.name}")
    return folder / "img_align_celeba.zip"


def thinfilm(folder: Path) -> None:
    """table.csv (filepath, x1..x8) and 10 photographs large enough for the page's ROI [678, 0, 767, 2452]."""
    (folder / "images").mkdir()
    lines = ["filepath," + ",".join(f"x{j}" for j in range(1, 9))]
    for i in range(10):
        frame = np.full((1445, 2452, 3), 40, dtype=np.uint8)
        frame[678:, : 200 * (i + 1)] = 20 * i
        Image.fromarray(frame).save(folder / "images" / f"{i}.png")
        lines.append(f"images/{i}.png," + ",".join(f"{i + j / 10:g}" for j in range(1, 9)))
    (folder / "table.csv").write_text("\n".join(lines) + "\n")


def film_conds(folder: Path) -> Path:
    """A conds.csv in the film table's columns."""
    (folder / "conds.csv").write_text("x1,x2,x3,x4\n0.4,0.08,0.9,0.1\n0.6,0.1,0.5,0.25\n")
    return folder / "conds.csv"


def digit_png(folder: Path) -> Path:
    """One digits image as a 16-pixel PNG."""
    from sklearn.datasets import load_digits

    Image.fromarray((load_digits().images[3] * 255 / 16).astype(np.uint8)).resize((16, 16)).save(folder / "digit.png")
    return folder / "digit.png"


def prompts(folder: Path) -> Path:
    """A prompts.txt of two lines."""
    (folder / "prompts.txt").write_text("a red circle\na blue square\n")
    return folder / "prompts.txt"


def captions(folder: Path) -> None:
    """Captioned images and the clean index prepare_captions writes (path, caption, clip_similarity)."""
    from fakes import fake_captioned_images

    fake_captioned_images(folder / "images", n=8)
    rows = [{"path": f"images/{p.name}", "caption": p.with_suffix(".txt").read_text().strip(), "clip_similarity": 0.3}
            for p in sorted((folder / "images").glob("*.png"))]
    (folder / "clean.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def sd(folder: Path) -> None:
    """A tiny random Stable Diffusion folder (diffusers layout), as tests/unit/lit/test_sd.py builds one."""
    from fakes import tiny_sd_pipeline

    tiny_sd_pipeline().save_pretrained(folder)


def sdxl(folder: Path) -> None:
    """A tiny random SDXL folder (two text encoders), as tests/unit/lit/test_sdxl.py builds one."""
    from fakes import tiny_sdxl_pipeline

    tiny_sdxl_pipeline().save_pretrained(folder)


def photo_png(folder: Path) -> Path:
    """An image for img2img (a random 64-pixel PNG)."""
    random_pngs(folder, 1, (64, 64))
    return next(folder.glob("*.png"))


def from_fakes(name: str) -> Callable[[Path], Path]:
    """A maker that calls tests/fakes.py's `name(folder)`."""
    def make(folder: Path) -> Path:
        import fakes

        return getattr(fakes, name)(folder)
    make.__name__ = name
    return make
