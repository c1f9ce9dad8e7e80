"""`python sample.py ckpt=<path> sampler=ddim sampler.steps=25 n=64 seed=0`: PNGs, a grid and a record.

The command is a thin caller of the Python API (`difflab.load(...)`, `DiffusionModel.draw`): it turns
conf/sample.yaml's keys into a checked `SampleOptions` (every value before anything is loaded; the sampler resolved
once), loads the model, and writes each batch's images as they are made (atomically). A sample cut short
(SIGTERM, Ctrl-C, a crash) continues with `resume=true` into the same `out_dir`: the images already on disk are
kept and the rest drawn with the same per-image seeds, so the folder ends as an uninterrupted run's would.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.config import rewrite_argv
from difflab.api.models import check_source, load_configured
from difflab.api.samples import Samples
from difflab.cli.resume import ImageWriter, output_folder, request_of, resume_command
from difflab.api.sampling import SampleOptions
from difflab.samplers.base import StepCallback
from difflab.utils.entry import hydra_main, on_interrupt
from difflab.utils.images import read_png
from difflab.utils.loggers import task_loggers
from difflab.utils.wandb_artifacts import log_sample_table, wandb_loggers

log = logging.getLogger(__name__)

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
    if cfg.save_images:
        checks.disk_room(out_dir, options.n - len(done), model.image_shape)
    on_interrupt(f"The images made so far are in {out_dir}; continue with: {resume_command(out_dir, 'sample.py')}")
    writer = ImageWriter(out_dir, request)
    made = {i: read_png(path, model.image_shape[0]) for i, path in done.items()}
    samples = model.draw(options, callback=callback, sink=writer if cfg.save_images else None, done=made)
    paths = samples.write_files(out_dir, save_images=bool(cfg.save_images), images_written=True)
    writer.finish()
    log_to_wandb(cfg, samples)
    return {"out_dir": out_dir, "nfe": samples.nfe, "images": samples.images, "grid": paths["grid"],
            "record": samples.record}


def log_to_wandb(cfg: DictConfig, samples: Samples) -> None:
    """With `logger=wandb`: the record as the run's config and a Table of the images (linked to the training run)."""
    with task_loggers(cfg.get("logger")) as loggers:
        for logger in wandb_loggers(loggers):
            logger.log_hyperparams(samples.record)
            log_sample_table(logger, samples.images, samples.rows[: len(samples)] or None)


def main() -> None:
    """`difflab-sample ckpt=... [overrides]` (`python sample.py`): sample from a checkpoint."""
    hydra_main("sample", run, __name__, rewrite_argv)
