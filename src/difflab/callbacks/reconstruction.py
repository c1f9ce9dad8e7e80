"""Reconstruction quality of a first-stage autoencoder during training: rFID (rKID), LPIPS and PSNR.

Every `every_n_steps` and at the end of training, every rank reconstructs its share of the first
`n_samples` images of the validation split (posterior mean), with the EMA weights; the metric suite
(the same Inception features and cached real statistics as the sample metrics) gives rFID/rKID against
the reference split, LPIPS(x, x_hat) uses the suite's LPIPS network, PSNR is on 8-bit images.
Rank 0 logs `val/rfid`, `val/rkid`, `val/lpips`, `val/psnr`, saves originals-over-reconstructions grids,
and at the end writes `<run dir>/metrics.json` of kind "autoencoder" (an autoencoder row of compare.py: rFID,
PSNR; the stage 1 of `model=ldm` is named "<model> autoencoder").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

from difflab.callbacks.ema import find_ema
from difflab.callbacks.nan_guard import check_finite_state
from difflab.callbacks.metrics import SampleMetrics, metrics_record_variant
from difflab.metrics.inception import to_uint8
from difflab.metrics.perceptual import LPIPSDiversity, lpips_network
from difflab.evaluation.suite import MetricSuite, MetricsConfig, Networks
from difflab.utils.cluster import reduce_scalar, shard, world
from difflab.utils.weights import MetricWeightsError

log = logging.getLogger(__name__)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of 8-bit versions of [-1, 1] images, per image [N] (inf for identical images)."""
    mse = (to_uint8(x).double() - to_uint8(y).double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


class ReconstructionMetrics(SampleMetrics):
    """Scores `pl_module.reconstruct` (an `AutoencoderModule`) on the validation split."""

    record_kind = "autoencoder"

    def __init__(self, config: MetricsConfig, networks: Networks | None = None, use_ema: bool = True,
                 split: str = "val", preview: int = 8) -> None:
        self.config = dataclasses.replace(config, inception_score=False, lpips_diversity=False, clip_score=False,
                                          condition_accuracy=False, also_sample={})
        self.networks, self.use_ema, self.split, self.preview = networks or Networks(), use_ema, split, preview
        self.suite: MetricSuite | None = None
        self.lpips: Any = None
        self.last: dict[str, float] = {}
        self.last_n = 0
        self.last_images: Tensor | None = None  # no sample strip: the gallery shows samples, not reconstructions

    def _setup(self, device: torch.device) -> MetricSuite:
        if self.suite is None:
            self.suite = MetricSuite(self.config, device, networks=self.networks)
            factory = self.networks.lpips or (lambda: lpips_network(self.config.weights["lpips_alexnet"], self.config.download))
            try:
                net, self.suite.weights_hash["lpips_alexnet"] = factory()
                self.lpips = net.to(device) if hasattr(net, "to") else net
            except MetricWeightsError as err:
                self.suite.skipped["lpips"] = str(err)
                log.warning("reconstruction LPIPS skipped: %s", err)
        return self.suite

    @torch.no_grad()
    def scores(self, pl_module: Any, datamodule: Any, sink: list[Tensor] | None = None) -> dict[str, float]:
        """rFID/rKID (when the Inception weights resolve), LPIPS (when AlexNet resolves) and PSNR; collective."""
        suite = self._setup(pl_module.device)
        suite.prepare_reference(datamodule)
        n = min(self.config.n_samples, len(datamodule.split_dataset(self.split)))
        rank, size = world()
        part = shard(n, rank, size)
        sums = {"psnr": 0.0, "lpips": 0.0}
        for images, index in datamodule.iter_images(self.split, part.start, part.stop, self.config.batch_size):
            images = images.to(pl_module.device)
            recon = pl_module.reconstruct(images)
            suite.update(recon, index)
            sums["psnr"] += float(psnr(images, recon).clamp(max=100.0).sum())
            if self.lpips is not None:
                prep = LPIPSDiversity._prepare
                sums["lpips"] += float(self.lpips(prep(images), prep(recon)).sum())
            if sink is not None and sum(map(len, sink)) < self.preview:
                sink.append(torch.cat([images[: self.preview], recon[: self.preview]]).cpu())
        values = {("r" + k): v for k, v in suite.compute().items() if k in ("fid", "kid", "kid_std")} if suite.features else {}
        total = {k: reduce_scalar(v, dist.ReduceOp.SUM, suite.device) for k, v in sums.items()}
        values["psnr"] = total["psnr"] / max(n, 1)
        if self.lpips is not None:
            values["lpips"] = total["lpips"] / max(n, 1)
        suite.reset()
        self.last_n = n
        return values

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, float]:
        """Reconstruct, score and log (originals over reconstructions as the grid); returns the logged values."""
        check_finite_state(trainer, pl_module, "metrics")
        ema = find_ema(trainer) if self.use_ema else None
        preview: list[Tensor] = []
        with ema.swapped(pl_module) if ema is not None else nullcontext():
            values = self.scores(pl_module, trainer.datamodule, preview)
        logged = {f"val/{k}": v for k, v in values.items() if math.isfinite(v)}
        grid = preview[0] if preview else None
        self.publish(trainer, logged, grid, tag, "val/reconstructions", nrow=None if grid is None else grid.shape[0] // 2)
        return logged

    def record_extra(self, pl_module: L.LightningModule) -> dict[str, Any]:
        """No scheduler; the stage 1 of a latent model is its "<model> autoencoder" row (`model=vae` keeps its name)."""
        config = getattr(pl_module, "run_config", None) or {}
        variant = metrics_record_variant(pl_module)
        extra: dict[str, Any] = {"scheduler": None, "scheduler_repr": None}  # no diffusion in an autoencoder row
        if config.get("task_name") == "stage1" and variant:
            extra["variant"] = f"{variant} autoencoder"
        return extra

    def protocol(self) -> dict[str, Any]:
        """The suite's protocol plus how reconstructions are scored."""
        return {**self.suite.protocol(), "reconstruction": f"first {self.last_n} images of the {self.split} split, "
                "posterior mean; PSNR on 8-bit images; LPIPS AlexNet (inputs < 64 px upsampled)"}
