"""The folders the studio serves: the runs folder and the checkpoint folders, and nothing outside them.

Every path that reaches the studio (a checkpoint typed or picked, a run's sample grid) goes through
`Folders.check`, which resolves `..` and symbolic links first: a path whose real location lies outside
every configured folder is refused with one paragraph naming the path and the config keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from difflab.errors import MissingFileError, UserError

SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # a diffusers Stable Diffusion folder
KEYS = "`runs_dir`, `ckpt_dirs`"


class OutsideFoldersError(UserError, PermissionError):
    """A path outside the folders the studio was started to serve (after resolving `..` and links)."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class Folders:
    """The runs folder (the Runs tab) and the checkpoint folders (the Sample tab), as real absolute paths."""

    runs_dir: Path
    ckpt_dirs: tuple[Path, ...]

    @classmethod
    def of(cls, runs_dir: str | Path, ckpt_dirs: Sequence[str | Path]) -> Folders:
        """The configured folders, each of which must exist."""
        for key, folder in [("runs_dir", runs_dir), *(("ckpt_dirs", d) for d in ckpt_dirs)]:
            if not Path(folder).expanduser().is_dir():
                raise MissingFileError.for_path(folder, key, "Pass a folder that exists (train.py writes runs under "
                                                "<root>/runs).", "Folder")
        real = lambda p: Path(os.path.realpath(Path(p).expanduser()))  # noqa: E731
        return cls(real(runs_dir), tuple(dict.fromkeys(real(d) for d in ckpt_dirs)))

    @property
    def all(self) -> tuple[Path, ...]:
        """Every served folder (runs first)."""
        return tuple(dict.fromkeys((self.runs_dir, *self.ckpt_dirs)))

    def check(self, path: str | Path, what: str = "file") -> Path:
        """`path` resolved (`..` and symbolic links followed) when it lies inside a served folder; refused otherwise."""
        given = Path(str(path)).expanduser()
        real = Path(os.path.realpath(given if given.is_absolute() else Path.cwd() / given))
        if not any(_inside(real, folder) for folder in self.all):
            served = ", ".join(f"'{f}'" for f in self.all)
            raise OutsideFoldersError(f"The {what} '{path}' is outside the folders this studio serves ({served}); "
                                      f"it is refused. Start the studio with that folder among its folders "
                                      f"(config keys {KEYS}), e.g. python studio.py ckpt_dirs=[<folder>].")
        return real

    def checkpoints(self) -> list[Path]:
        """Every `*.ckpt` file and Stable Diffusion folder under the checkpoint folders, newest first."""
        found: dict[Path, float] = {}
        for folder in self.ckpt_dirs:
            for path in _walk(folder):
                if path.name.endswith(".ckpt") and path.is_file() and not path.name.startswith("."):
                    found[path] = path.stat().st_mtime
                elif path.is_dir() and all((path / part).is_dir() for part in SD_PARTS):
                    found[path] = path.stat().st_mtime
        inside = [p for p in found if any(_inside(Path(os.path.realpath(p)), f) for f in self.all)]
        return sorted(inside, key=lambda p: (-found[p], str(p)))

    def label(self, path: str | Path) -> str:
        """A path as shown in menus: relative to the served folder that holds it."""
        path = Path(path)
        for folder in self.all:
            if _inside(path, folder):
                return str(Path(folder.name) / path.relative_to(folder))
        return str(path)


def _walk(folder: Path) -> Iterable[Path]:
    """Files and folders under `folder` (symbolic links not followed into; hidden folders and Hydra's own skipped)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("wandb", "__pycache__")]
        here = Path(root)
        yield from (here / d for d in dirs)
        yield from (here / f for f in files)


def png(path: str | Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3] (grey images repeated) for the page; call it on checked paths only."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
