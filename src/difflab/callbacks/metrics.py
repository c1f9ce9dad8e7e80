"""Sample-quality metrics during training: FID/KID/IS, LPIPS diversity, CLIP score, samples/sec, NFE.

Every `every_n_steps` and at the end of training, every rank samples its share of
`n_samples` images with the EMA weights and the configured sampler (per-sample seeds, so the
values do not depend on the number of processes), the suite reduces across ranks, and rank 0
logs `val/*` and `perf/*` and, at the end, writes `<run dir>/metrics.json` for compare.py, with a strip of the
first samples (`metrics/samples_strip.png`, a row of the comparison gallery). Each sampler of `metrics.also_sample`
(label -> sampler fields) is scored at the end too, logged as `val_<label>/*`, `perf_<label>/*`, and recorded in
`<run dir>/<label>/metrics.json` (e.g. the DDIM row of a DDPM run: the same checkpoint, no second training).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch

from difflab.callbacks.ema import find_ema
from difflab.callbacks.nan_guard import check_finite_state
from difflab.utils.images import save_grid
from difflab.evaluation.image_record import image_parameters
from difflab.evaluation.score import metrics_record, sample_and_score, write_record
from difflab.evaluation.suite import MetricsConfig, MetricSuite, Networks
from difflab.samplers import SamplerSpec
from difflab.utils.wandb_artifacts import is_wandb, log_sample_table

log = logging.getLogger(__name__)

PERF_KEYS = ("samples_per_sec", "nfe")
STRIP_SAMPLES = 8  # samples per row of the comparison gallery (compare/gallery.py)


class SampleMetrics(L.Callback):
    """Scores the EMA model every `config.every_n_steps` steps and at the end of training."""

    record_kind = "train"  # the `kind` of the metrics.json it writes

    def __init__(self, config: MetricsConfig, networks: Networks | None = None, use_ema: bool = True,
                 preview: int = 64) -> None:
        self.config, self.networks, self.use_ema, self.preview = config, networks, use_ema, preview
        self.suite: MetricSuite | None = None
        self.last: dict[str, float] = {}
        self.last_n = 0
        self.last_images: torch.Tensor | None = None
        self.last_info: Any = None  # the `parameters` chunk of the latest pass's first image (its grids carry it)

    def _suite(self, pl_module: L.LightningModule) -> MetricSuite:
        if self.suite is None:
            self.suite = MetricSuite(self.config, pl_module.device, checks=pl_module.condition.checks,
                                     networks=self.networks)
        return self.suite

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str,
                 suffix: str = "") -> dict[str, float]:
        """Sample, score and log; returns {"val/fid": ..., "perf/samples_per_sec": ..., ...} on every rank
        (`val<suffix>/...` and `perf<suffix>/...` with a suffix)."""
        check_finite_state(trainer, pl_module, "metrics")
        suite = self._suite(pl_module)
        suite.prepare_reference(trainer.datamodule)
        preview: list[torch.Tensor] = []

        def keep(images: torch.Tensor, index: torch.Tensor) -> None:
            if sum(map(len, preview)) < self.preview:
                preview.append(images[: self.preview - sum(map(len, preview))])

        ema = find_ema(trainer) if self.use_ema else None
        # with every quality metric skipped (no weights), one batch is enough for samples/sec and NFE
        n = self.config.n_samples if suite.active else min(self.config.n_samples, self.config.batch_size)
        requests = pl_module.condition.draw(n, trainer.datamodule)
        rows = pl_module.condition.rows(requests)
        self.last_info = image_parameters(pl_module, seed=self.config.seed, index=0, row=rows[0] if rows else None,
                                          extra={"Step": trainer.global_step, "EMA": ema is not None,
                                                 "Run": str(Path(trainer.default_root_dir).resolve())})
        with ema.swapped(pl_module) if ema is not None else nullcontext():
            values = sample_and_score(pl_module, suite, n=n, seed=self.config.seed,
                                      batch_size=self.config.batch_size, sink=keep, requests=requests)
        suite.reset()
        logged = {(f"perf{suffix}/{k}" if k in PERF_KEYS else f"val{suffix}/{k}"): v for k, v in values.items()
                  if not k.endswith("subset_size_used")}
        self.last_n = n
        self.last_images = torch.cat(preview) if preview else None
        self.publish(trainer, logged, self.last_images, tag)
        return logged

    def publish(self, trainer: L.Trainer, logged: dict[str, float], grid: torch.Tensor | None, tag: str,
                image_key: str = "val/samples", nrow: int | None = None) -> None:
        """Keep `logged` as the latest values (callback_metrics on every rank); rank 0 logs them and the grid."""
        self.last = logged
        for key, value in logged.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)
        if grid is not None:
            name = tag if image_key == "val/samples" else f"{image_key.split('/')[-1]}_{tag}"
            path = save_grid(grid, Path(trainer.default_root_dir) / "metrics" / f"{name}.png", nrow=nrow,
                             parameters=getattr(self, "last_info", None))
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):
                    logger.log_image(image_key, [str(path)], step=trainer.global_step, caption=[tag])
                if tag == "final" and image_key == "val/samples" and is_wandb(logger):  # the final metric pass
                    log_sample_table(logger, grid, step=trainer.global_step)
        log.info("step %d metrics: %s", trainer.global_step, {k: round(v, 4) for k, v in logged.items()})

    def protocol(self) -> dict[str, Any]:
        """What `metrics.json` records about how the values were measured."""
        return self.suite.protocol()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step, every = trainer.global_step, self.config.every_n_steps
        final = trainer.max_steps > 0 and step >= trainer.max_steps  # on_train_end covers it
        if every > 0 and step > 0 and step % every == 0 and not final and step != getattr(self, "_last_step", -1):
            self._last_step = step
            self.evaluate(trainer, pl_module, f"step_{step:07d}")

    def write_record(self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path, kind: str,
                     extra: dict[str, Any] | None = None) -> None:
        """The latest values as `folder/metrics.json` (rank 0), with the first samples as the gallery strip."""
        if not trainer.is_global_zero:
            return
        extra = dict(extra or {})
        if self.last_images is not None:
            strip = save_grid(self.last_images[:STRIP_SAMPLES], folder / "metrics" / "samples_strip.png",
                              nrow=STRIP_SAMPLES, parameters=getattr(self, "last_info", None))
            extra["sample_strip"] = strip.relative_to(folder).as_posix()
        values = {k.split("/", 1)[1]: v for k, v in self.last.items()}
        record = metrics_record(kind=kind, values=values, protocol=self.protocol(), module=pl_module,
                                n_samples=self.last_n, seed=self.config.seed, run_dir=folder,
                                global_step=trainer.global_step, extra=extra)
        write_record(record, folder / "metrics.json")

    def record_extra(self, pl_module: L.LightningModule) -> dict[str, Any]:
        """Fields that the run's own metrics.json adds to the standard record."""
        return {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = Path(trainer.default_root_dir)
        self.evaluate(trainer, pl_module, "final")
        self.write_record(trainer, pl_module, run_dir, self.record_kind, self.record_extra(pl_module))
        for label, fields in (self.config.also_sample or {}).items():  # the same weights under other samplers
            previous, pl_module.sampler = pl_module.sampler, also_sampler(fields)
            try:
                self.evaluate(trainer, pl_module, f"final_{label}", suffix=f"_{label}")
                self.write_record(trainer, pl_module, run_dir / label, "evaluate",
                                  {"variant": label, "trained_as": metrics_record_variant(pl_module)})
            finally:
                pl_module.sampler = previous


def also_sampler(fields: Any) -> SamplerSpec:
    """The SamplerSpec of a `metrics.also_sample` entry; x0 clipping `auto` unless given, as in every sampler preset."""
    return SamplerSpec(**{"clip_denoised": "auto", **dict(fields)})


def metrics_record_variant(pl_module: Any) -> str | None:
    """The model preset the module was trained as (`model=...`), as its metrics.json names it."""
    return ((getattr(pl_module, "run_config", None) or {}).get("choices") or {}).get("model")

