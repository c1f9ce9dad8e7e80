"""Commands that keep their work: a request written beside the outputs, and `resume=true` to continue it.

sample.py and evaluate.py write their images as they are made; a run cut short (SIGTERM, Ctrl-C, a crash) leaves
its folder with `.request.json` (what was asked) and no final record. The same command with `resume=true` into that
folder checks that it asks the same, reads the images already made back, and draws only the rest (per-image seeds:
the folder ends as an uninterrupted run's would).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from difflab.api import checks
from difflab.errors import ConfigError, UnwritableOutputError
from difflab.utils.checkpoint_files import clean_temp_files
from difflab.utils.images import write_png
from difflab.utils.files import write_json

log = logging.getLogger(__name__)

REQUEST = ".request.json"  # what a run folder was asked for: a resumed run must ask the same


def request_of(cfg: DictConfig) -> dict[str, Any]:
    """What decides a run's images: every key but where they go and whether to resume."""
    keys = OmegaConf.to_container(cfg, resolve=True)
    keys["seed_given"] = keys.pop("seed", None)
    for key in ("out_dir", "overwrite", "resume", "paths", "logger", "hydra"):
        keys.pop(key, None)
    if keys.get("ckpt") and Path(str(keys["ckpt"])).expanduser().is_file():  # a missing file: load names it
        stat = Path(str(keys["ckpt"])).expanduser().stat()
        keys["ckpt_file"] = [str(Path(str(keys["ckpt"])).expanduser().resolve()), stat.st_size, stat.st_mtime_ns]
    return keys


def output_folder(cfg: DictConfig, request: dict[str, Any],
                  record: str = "samples.json") -> tuple[Path, dict[int, Path]]:
    """(the output folder, the images already in it by index): a fresh folder, or with `resume=true` an unfinished
    run folder of the same request (its final record is `record`; `request["seed"]` becomes the started run's seed
    when this one asks for a random seed again)."""
    out_dir = Path(str(cfg.out_dir)).expanduser()
    if not cfg.get("resume", False):
        try:
            return checks.fresh_output(out_dir, "out_dir", bool(cfg.get("overwrite", False))), {}
        except UnwritableOutputError as err:
            if (out_dir / REQUEST).is_file() and not (out_dir / record).is_file():
                raise UnwritableOutputError(f"{err} It holds an unfinished run: add resume=true to continue it.") from None
            raise
    if (out_dir / record).is_file():
        raise ConfigError.bad_value("resume", f"the run in '{out_dir}' is complete (it has {record})",
                                    "Nothing to continue: pass another out_dir=<folder> for a new run.")
    if not (out_dir / REQUEST).is_file():
        raise ConfigError.bad_value("resume", f"'{out_dir}' (config key `out_dir`) holds no unfinished run",
                                    "Pass out_dir=<the folder of the run that was cut short>, or leave resume out.")
    asked = json.loads((out_dir / REQUEST).read_text())
    if request.get("seed_given") == -1:  # seed=-1 again: the seed the sample was started with
        request["seed"] = asked.get("seed")
    changed = sorted(k for k in set(asked) | set(request) if asked.get(k) != request.get(k))
    if changed:
        raise ConfigError.bad_value("resume", f"the run in '{out_dir}' was asked with other values of "
                                    f"{', '.join(changed[:6])}", "Continue it with the command that started it, or "
                                    "start a new run in another out_dir.")
    for stale in clean_temp_files(out_dir):  # a write a kill cut short: its image is drawn again
        log.info("removed %s, left by an interrupted write", stale)
    done = {int(p.stem): p for p in sorted((out_dir / "images").glob("*.png")) if p.stem.isdigit()}
    log.info("resuming %s: %d images already made", out_dir, len(done))
    return out_dir, done


def resume_command(out_dir: Path, script: str) -> str:
    """This command again, into `out_dir` with resume=true (what continues a run cut short)."""
    args = [a for a in sys.argv[1:] if not a.startswith(("out_dir=", "resume=", "hydra.run.dir="))]
    return " ".join(["python", script, *(shlex.quote(a) for a in args), f"out_dir={shlex.quote(str(out_dir))}",
                     "resume=true"])


class ImageWriter:
    """A run's sink: each batch's images written as they are made (atomic PNGs in <out_dir>/images), and with the
    first of them the request (so a run that fails before making any image leaves its folder empty and reusable)."""

    def __init__(self, out_dir: Path, request: dict[str, Any]) -> None:
        self.out_dir, self.request = out_dir, request

    def __call__(self, images: Tensor, index: Sequence[int] | Tensor) -> None:
        if not (self.out_dir / REQUEST).is_file():
            (self.out_dir / "images").mkdir(exist_ok=True)
            write_json(self.out_dir / REQUEST, self.request)
        for i, image in zip(index.tolist() if isinstance(index, Tensor) else index, images):
            write_png(image, self.out_dir / "images" / f"{int(i):06d}.png")

    def finish(self) -> None:
        """The run is complete: its request goes (the final record says what it was)."""
        (self.out_dir / REQUEST).unlink(missing_ok=True)
