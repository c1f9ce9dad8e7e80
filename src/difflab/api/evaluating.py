"""Scoring a model or a folder of images with the pinned protocol: what `DiffusionModel.evaluate` and
`python evaluate.py` run.

A model is sampled batch by batch (per-image seeds, so the numbers do not depend on the batching) into the metric
suite, each batch handed to `sink` as it is made (evaluate.py writes the PNGs); a folder of images (e.g. from
another codebase) is scored with the same protocol. The result is the `metrics.json` record compare.py reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.data import DataLoader

from difflab.api.images import folder_images
from difflab.api.sampling import negative_condition
from difflab.callbacks.metrics import STRIP_SAMPLES
from difflab.data.base import collate_batch
from difflab.data.files import DataNotFoundError, ImageFileDataset
from difflab.data.image_text import read_index
from difflab.errors import ConfigError
from difflab.evaluation.image_record import image_parameters
from difflab.evaluation.likelihood import data_bits_per_dim
from difflab.evaluation.score import metrics_record, sample_and_score, write_record
from difflab.evaluation.suite import MetricsConfig, MetricSuite, Networks
from difflab.utils.images import png_levels, save_grid
from difflab.utils.progress import Progress
from difflab.utils.stored_config import instantiate_stored
from difflab.utils.tensors import autocast_for

log = logging.getLogger(__name__)
STRIP = "samples_strip.png"
Sink = Callable[[Tensor, Tensor, list[str]], None]  # (images [B, C, H, W] in [-1, 1], global indices [B], their
#                                                   `parameters` chunks)


def score_folder(folder: Path, datamodule: Any, suite: MetricSuite, batch_size: int) -> dict[str, float]:
    """Score the images of `folder` (sorted; resized to the data set's resolution when they differ)."""
    files = folder_images(folder)
    dataset = ImageFileDataset(folder, files, None, datamodule.resolution, datamodule.channels, center_crop=False)
    offset, progress = 0, Progress("features", len(files), "images")
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_batch):
        images = batch["image"]
        suite.update(images, torch.arange(offset, offset + images.shape[0]))
        offset += images.shape[0]
        progress.update(images.shape[0])
    progress.close()
    values = suite.compute()
    values["n_images"] = float(offset)
    return values


def read_prompts(path: str) -> list[str]:
    """Prompts of a .txt file (one per line, blank lines skipped) or the captions of a .jsonl/.csv index."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError.for_path(file, "prompts", "Pass prompts=<a .txt file, one prompt per line, or a "
                                         ".jsonl/.csv index with a caption column>.", "Prompt file")
    if file.suffix.lower() in (".jsonl", ".csv"):
        prompts = [caption for _, caption in read_index(file)]
    else:
        prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError.bad_value("prompts", f"'{file}' holds no prompts", "Give a file with one prompt per line.")
    return prompts


def reference_data(module: Any | None, data: Any = None, prompts: list[str] | None = None) -> Any | None:
    """The data module of the reference set: `data` (a config node, or a data module), else the checkpoint's own
    (its stored config is data: trusted targets only); None for prompts without reference images."""
    if data is None and prompts:
        return None
    if data is not None:
        return data if hasattr(data, "setup") else instantiate(data)
    saved = ((module.run_config or {}).get("data") or {}) if module is not None else {}
    if "_target_" in saved:
        return instantiate_stored(saved, getattr(module, "checkpoint_path", "the model"), "data")
    raise ConfigError("Config key `data` is required: no data set for the reference statistics; pass data=<name> "
                      "(e.g. data=digits, or data=image_folder data.root=<reference images>).")


@contextmanager
def evaluated_as(module: Any, sampler: Any = None, guidance_scale: float | None = None) -> Any:
    """The module with the evaluation's sampler and guidance scale for the time of the evaluation (restored after)."""
    before = (module.sampler, module.guidance_scale)
    module.sampler = sampler if sampler is not None else module.sampler
    module.guidance_scale = float(guidance_scale) if guidance_scale is not None else module.guidance_scale
    try:
        yield module
    finally:
        module.sampler, module.guidance_scale = before


def sample_into_suite(module: Any, suite: MetricSuite, datamodule: Any, *, n: int, seed: int, batch_size: int,
                      out_dir: Path | None, prompts: list[str] | None, negative_prompt: str | None, precision: str,
                      sink: Sink | None, done: Mapping[int, Tensor] | None = None
                      ) -> tuple[dict[str, float], Tensor | None, list[dict[str, Any]]]:
    """Sample n images of the module into the suite (each batch to `sink`; the images `done` scored as they are),
    with a grid and a strip of them in `out_dir`; returns the values, the first (up to 64) images and the requested
    condition of each image. The suite sees every image at its 8-bit PNG levels, as written (and read back)."""
    preview: list[Tensor] = []
    requests = module.condition.draw(n, datamodule, prompts)
    rows = module.condition.rows(requests)

    def text(i: int) -> str:  # image i's `parameters` chunk
        return image_parameters(module, seed=seed, index=i, row=rows[i] if i < len(rows) else None,
                                negative_prompt=negative_prompt).text()

    def keep(images: Tensor, index: Tensor) -> None:
        if sink is not None:
            sink(images, index, [text(i) for i in index.tolist()])

    with autocast_for(torch.device(module.device), precision):
        uncond = negative_condition(module, negative_prompt)
        values = sample_and_score(module, suite, n=n, seed=seed, batch_size=batch_size, requests=requests,
                                  sink=keep, uncond=uncond, done=done, transform=png_levels, keep=preview)
    first = torch.cat(preview) if preview else None
    if first is not None and out_dir is not None:
        save_grid(first, out_dir / "grid.png", parameters=text(0))
        save_grid(first[:STRIP_SAMPLES], out_dir / STRIP, nrow=STRIP_SAMPLES, parameters=text(0))  # comparison gallery row
    return values, first, rows


def evaluate(module: Any | None, metrics: MetricsConfig, datamodule: Any | None, *, n: int, seed: int,
             batch_size: int, images: Path | None = None, out_dir: Path | None = None,
             prompts: list[str] | None = None, prompts_file: str | None = None, negative_prompt: str | None = None,
             precision: str = "32", sink: Sink | None = None, networks: Networks | None = None,
             ckpt: str | None = None, done: Mapping[int, Tensor] | None = None
             ) -> tuple[dict[str, Any], Tensor | None, list[dict[str, Any]]]:
    """Score `module` (n samples; metrics=nll adds the likelihood of real data) or the folder `images` against the
    reference data of `datamodule` (None: prompts alone, CLIP score and samples/sec). Writes metrics.json (and a
    grid and strip of the samples) into `out_dir` when given. Returns (the record, up to 64 samples, the requested
    condition of each image)."""
    if prompts and datamodule is None:  # no reference images: CLIP score and samples/sec only
        metrics.fid = metrics.kid = metrics.inception_score = metrics.lpips_diversity = metrics.broken_rate = False
    device = torch.device(module.device) if module is not None else torch.device("cpu")
    suite = MetricSuite(metrics, device, checks=module.condition.checks if module is not None else (),
                        networks=networks, strict=True)
    if datamodule is not None:
        suite.prepare_reference(datamodule)
    if module is None:
        if metrics.nll["enabled"]:
            raise ConfigError.bad_value("metrics", "metrics=nll needs a model", "Pass ckpt=<checkpoint> instead of images=<folder>.")
        values = score_folder(images, datamodule, suite, metrics.feature_batch_size)
        n, extra = int(values.pop("n_images")), {"images": str(images.resolve())}
        samples, rows = None, []
    else:
        values, samples, rows = sample_into_suite(
            module, suite, datamodule, n=n, seed=seed, batch_size=batch_size, out_dir=out_dir, prompts=prompts,
            negative_prompt=negative_prompt, precision=precision, sink=sink, done=done) if n > 0 else ({}, None, [])
        if metrics.nll["enabled"]:
            values.update(data_bits_per_dim(module, datamodule, **{k: v for k, v in metrics.nll.items() if k != "enabled"}))
        strip = out_dir is not None and (out_dir / STRIP).is_file()
        extra = {"images": str((out_dir / "images").resolve()) if sink is not None and out_dir is not None and n > 0
                 else None, "precision": precision, "sample_strip": STRIP if strip else None}
        if prompts:
            extra.update(prompts=str(Path(prompts_file).resolve()) if prompts_file else None, n_prompts=len(prompts),
                         negative_prompt=negative_prompt)
        if metrics.nll["enabled"]:
            extra["nll"] = dict(metrics.nll)
    record = metrics_record(
        kind="evaluate", values=values, protocol=suite.protocol(), module=module, n_samples=n, seed=seed,
        run_dir=out_dir if out_dir is not None else Path.cwd(), global_step=getattr(module, "checkpoint_global_step", 0),
        ckpt=ckpt, extra=extra,
        data={"name": datamodule.name, "resolution": datamodule.resolution} if datamodule is not None else
        {"name": "prompts", "resolution": module.image_shape[-1]},
    )
    if out_dir is not None:
        log.info("wrote %s: %s", write_record(record, out_dir / "metrics.json"),
                 {k: round(v, 4) for k, v in record["values"].items() if v is not None})
    return record, samples, rows
