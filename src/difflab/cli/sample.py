"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record.

The command is a thin caller of the Python API (`difflab.load(...)`, `DiffusionModel.draw`): it turns
conf/sample.yaml's keys into a checked `SampleOptions` (every value before anything is loaded; the sampler resolved
once), loads the model, and writes each batch's images as they are made (atomically). A sample cut short
(SIGTERM, Ctrl-C, a crash) continues with `resume=true` into the same `out_dir`: the images already on disk are
kept and the rest drawn with the same per-image seeds, so the folder ends as an uninterrupted run's would.

Every PNG carries its settings in the web UI's `parameters` chunk; `from_png=<image>` composes the request that
image records (`difflab.api.pnginfo`: keys given beside it win) and checks that the image comes out the same.
`xyz=` draws an X/Y/Z grid of the request over up to three keys (`difflab.api.xyz`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from difflab.api import checks
from difflab.api.config import rewrite_sample_argv
from difflab.api.models import check_source, load_configured
from difflab.api.pnginfo import png_request
from difflab.api.samples import Samples
from difflab.api.sampling import SampleOptions
from difflab.api.xyz import run_xyz
from difflab.cli.resume import ImageWriter, output_folder, request_of, resume_command
from difflab.errors import ConfigError
from difflab.samplers.base import StepCallback
from difflab.utils.entry import hydra_main, on_interrupt
from difflab.utils.images import png_pixels, read_png
from difflab.utils.loggers import task_loggers
from difflab.utils.wandb_artifacts import log_sample_table, wandb_loggers

log = logging.getLogger(__name__)

def run(cfg: DictConfig, callback: StepCallback | None = None) -> dict[str, Any]:
    """Sample `n` images from a checkpoint or pretrained pipeline into `out_dir`; returns the output folder, NFE,
    image tensor, grid file and the samples.json record."""
    check_source(cfg)
    if cfg.get("xyz") is not None:
        return xyz(cfg, callback)
    source = png_request(cfg.from_png) if cfg.get("from_png") else None
    options = SampleOptions.from_config(cfg)  # every value checked before any loading or sampling
    checks.inference_device(cfg.device)
    request = {**request_of(cfg), "seed": options.seed}  # seed=-1: the seed drawn
    out_dir, done = output_folder(cfg, request)
    options.seed = request["seed"]
    model = load_configured(cfg, options.sampler)
    if cfg.save_images:
        checks.disk_room(out_dir, options.n - len(done), model.image_shape)
    on_interrupt(f"The images made so far are in {out_dir}; continue with: {resume_command(out_dir, 'sample.py')}")
    writer = ImageWriter(out_dir, request)
    made = {i: read_png(path, model.image_shape[0]) for i, path in done.items()}
    samples = model.draw(options, callback=callback, sink=writer if cfg.save_images else None, done=made)
    if source is not None:
        samples.record["from_png"] = compare_with_png(cfg.from_png, source, samples)
    paths = samples.write_files(out_dir, save_images=bool(cfg.save_images), images_written=True)
    writer.finish()
    log_to_wandb(cfg, samples)
    return {"out_dir": out_dir, "nfe": samples.nfe, "images": samples.images, "grid": paths["grid"],
            "record": samples.record}


def compare_with_png(path: str, source: Any, samples: Samples) -> dict[str, Any]:
    """from_png: whether the image the PNG is comes out the same (its index in this request), logged and recorded
    in samples.json."""
    if source.unused:
        log.warning("from_png: %s also says %s, which sample.py does not use", path, ", ".join(source.unused))
    index = source.index if source.exact else None
    record: dict[str, Any] = {"file": str(Path(path).expanduser().resolve()), "index": index, "identical": None}
    if index is None or index >= len(samples):
        log.warning("from_png: %s records no sample.py request (it is evaluate.py's, a training grid's or the web "
                    "UI's), so this is a request with its settings, not the same images", path)
        return record
    with Image.open(Path(path).expanduser()) as img:
        before = np.asarray(img.convert("RGB")).astype(np.int16)
    after = png_pixels(samples.images[index]).astype(np.int16)
    differ = before.shape != after.shape or not np.array_equal(before, after)
    record["identical"] = not differ
    if differ:
        diff = np.abs(before - after) if before.shape == after.shape else None
        record["max_difference"] = int(diff.max()) if diff is not None else None
        log.warning("from_png: image %d differs from %s (%s): expected when this command changes the request, "
                    "else another device or library version", index, path,
                    f"{int((diff > 0).any(-1).sum())} pixels, by up to {int(diff.max())}/255" if diff is not None
                    else "another size")
    else:
        log.info("from_png: image %d reproduces %s bit for bit", index, path)
    return record


def xyz(cfg: DictConfig, callback: StepCallback | None) -> dict[str, Any]:
    """`xyz=`: the X/Y/Z grid of the request into `out_dir` (`difflab.api.xyz.run_xyz`)."""
    if cfg.get("resume", False):
        raise ConfigError.bad_value("resume", "an X/Y/Z grid (xyz=) does not resume", "Run it again into a new "
                                    "out_dir (each cell is a sample folder of its own).")
    checks.inference_device(cfg.device)
    out_dir = checks.fresh_output(cfg.out_dir, "out_dir", bool(cfg.get("overwrite", False)))
    return run_xyz(cfg, out_dir, load_configured, callback)


def log_to_wandb(cfg: DictConfig, samples: Samples) -> None:
    """With `logger=wandb`: the record as the run's config and a Table of the images (linked to the training run)."""
    with task_loggers(cfg.get("logger")) as loggers:
        for logger in wandb_loggers(loggers):
            logger.log_hyperparams(samples.record)
            log_sample_table(logger, samples.images, samples.rows[: len(samples)] or None)


def main() -> None:
    """`difflab-sample ckpt=... [overrides]` (`python sample.py`): sample from a checkpoint."""
    hydra_main("sample", run, __name__, rewrite_sample_argv)
