"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record.

The command is a thin caller of the Python API (`difflab.load(...)`, `DiffusionModel.draw`): it turns
conf/sample.yaml's keys into a checked `SampleOptions` (every value before anything is loaded; the sampler resolved
once), loads the model, and writes each batch's images as they are made (atomically). A sample cut short
(SIGTERM, Ctrl-C, a crash) continues with `resume=true` into the same `out_dir`: the images already on disk are
kept and the rest drawn with the same per-image seeds, so the folder ends as an uninterrupted run's would.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from difflab.api import checks
from difflab.api.config import rewrite_argv
from difflab.api.models import check_source, load_configured
from difflab.api.samples import Samples
from difflab.api.sampling import SampleOptions
from difflab.errors import ConfigError, UnwritableOutputError
from difflab.samplers.base import StepCallback
from difflab.utils.entry import hydra_main, on_interrupt
from difflab.utils.images import read_png, write_png
from difflab.utils.jsonio import write_json
from difflab.utils.loggers import task_loggers
from difflab.utils.wandb_artifacts import log_sample_table, wandb_loggers

log = logging.getLogger(__name__)

REQUEST = ".request.json"  # what a sample folder was asked for: a resumed run must ask the same


def request_of(cfg: DictConfig) -> dict[str, Any]:
    """What decides a sample folder's images: every key but where they go and whether to resume."""
    keys = OmegaConf.to_container(cfg, resolve=True)
    keys["seed_given"] = keys.pop("seed", None)
    for key in ("out_dir", "overwrite", "resume", "paths", "logger", "hydra"):
        keys.pop(key, None)
    if keys.get("ckpt") and Path(str(keys["ckpt"])).expanduser().is_file():  # a missing file: load names it
        stat = Path(str(keys["ckpt"])).expanduser().stat()
        keys["ckpt_file"] = [str(Path(str(keys["ckpt"])).expanduser().resolve()), stat.st_size, stat.st_mtime_ns]
    return keys


def output_folder(cfg: DictConfig, request: dict[str, Any]) -> tuple[Path, dict[int, Path]]:
    """(the output folder, the images already in it by index): a fresh folder, or with `resume=true` an unfinished
    sample folder of the same request (`request["seed"]` becomes the started sample's seed when this one asks for a
    random seed again)."""
    out_dir = Path(str(cfg.out_dir)).expanduser()
    if not cfg.get("resume", False):
        try:
            return checks.fresh_output(out_dir, "out_dir", bool(cfg.get("overwrite", False))), {}
        except UnwritableOutputError as err:
            if (out_dir / REQUEST).is_file() and not (out_dir / "samples.json").is_file():
                raise UnwritableOutputError(f"{err} It holds an unfinished sample: add resume=true to continue it.") from None
            raise
    if (out_dir / "samples.json").is_file():
        raise ConfigError.bad_value("resume", f"the sample in '{out_dir}' is complete (it has samples.json)",
                                    "Nothing to continue: pass another out_dir=<folder> for a new sample.")
    if not (out_dir / REQUEST).is_file():
        raise ConfigError.bad_value("resume", f"'{out_dir}' (config key `out_dir`) holds no unfinished sample",
                                    "Pass out_dir=<the folder of the sample that was cut short>, or leave resume out.")
    asked = json.loads((out_dir / REQUEST).read_text())
    if request.get("seed_given") == -1:  # seed=-1 again: the seed the sample was started with
        request["seed"] = asked.get("seed")
    changed = sorted(k for k in set(asked) | set(request) if asked.get(k) != request.get(k))
    if changed:
        raise ConfigError.bad_value("resume", f"the sample in '{out_dir}' was asked with other values of "
                                    f"{', '.join(changed[:6])}", "Continue it with the command that started it, or "
                                    "start a new sample in another out_dir.")
    done = {int(p.stem): p for p in sorted((out_dir / "images").glob("*.png")) if p.stem.isdigit()}
    log.info("resuming %s: %d images already made", out_dir, len(done))
    return out_dir, done


def run(cfg: DictConfig, callback: StepCallback | None = None) -> dict[str, Any]:
    """Sample `n` images from a checkpoint or pretrained pipeline into `out_dir`; returns the output folder, NFE,
    image tensor, grid file and the samples.json record."""
    check_source(cfg)
    options = SampleOptions.from_config(cfg)  # every value checked before any loading or sampling
    checks.inference_device(cfg.device)
    request = {**request_of(cfg), "seed": options.seed}  # seed=-1: the seed drawn
    out_dir, done = output_folder(cfg, request)
    options.seed = request["seed"]
    model = load_configured(cfg, options.sampler)
    on_interrupt(f"The images made so far are in {out_dir}; continue with: {resume_command(out_dir)}")
    if cfg.save_images:
        (out_dir / "images").mkdir(exist_ok=True)
    write_json(out_dir / REQUEST, request)

    def sink(images: Any, index: list[int]) -> None:
        for i, image in zip(index, images):
            write_png(image, out_dir / "images" / f"{i:06d}.png")

    made = {i: read_png(path, model.image_shape[0]) for i, path in done.items()}
    samples = model.draw(options, callback=callback, sink=sink if cfg.save_images else None, done=made)
    paths = samples.write_files(out_dir, save_images=bool(cfg.save_images), images_written=True)
    (out_dir / REQUEST).unlink()
    log_to_wandb(cfg, samples)
    return {"out_dir": out_dir, "nfe": samples.nfe, "images": samples.images, "grid": paths["grid"],
            "record": samples.record}


def resume_command(out_dir: Path) -> str:
    """This command again, into `out_dir` with resume=true (what continues a sample cut short)."""
    args = [a for a in sys.argv[1:] if not a.startswith(("out_dir=", "resume=", "hydra.run.dir="))]
    return " ".join(["python", "sample.py", *(shlex.quote(a) for a in args), f"out_dir={shlex.quote(str(out_dir))}",
                     "resume=true"])


def log_to_wandb(cfg: DictConfig, samples: Samples) -> None:
    """With `logger=wandb`: the record as the run's config and a Table of the images (linked to the training run)."""
    with task_loggers(cfg.get("logger")) as loggers:
        for logger in wandb_loggers(loggers):
            logger.log_hyperparams(samples.record)
            log_sample_table(logger, samples.images, samples.rows[: len(samples)] or None)


def main() -> None:
    """`difflab-sample ckpt=... [overrides]` (`python sample.py`): sample from a checkpoint."""
    hydra_main("sample", run, __name__, rewrite_argv)
