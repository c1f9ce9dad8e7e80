"""The condition regressor: images -> the vector of values each shows (the inverse of a vector-conditioned model).

`python train.py model=regressor data=shapes` (or `data=csv ...`) trains a small CNN (`difflab.nets.SmallCNN`,
with coordinate channels) on the real images of a data set with a vector per image. It regresses the z-scores
of the values under the training split's statistics (`CondStats`, saved in every checkpoint as "cond_stats"),
with the smooth-L1 loss (beta `loss_beta`, in std units), and reports on the validation split, per column and as
column means: `val/mae/<column>` (raw units), `val/mae_std/<column>` (std units) and `val/r2/<column>`
(`difflab.metrics.regression`). `predict` maps images of any size (the data module's preprocessing already
applied: ROI crop, resize) to raw values. The same model serves `predict.py`, `sample.py regressor=...` and the
`cond_mae` metric, which trains it with `fit_regressor` when no checkpoint is given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data.base import resize_square
from difflab.data.vectors import CondStats
from difflab.errors import ConfigError
from difflab.lit.checkpoint import (
    check_state_dict_compatible,
    load_weights,
    read_checkpoint,
    require_model,
)
from difflab.lit.optim import LRSchedulerFactory, OptimizerFactory, trainable_optimizers
from difflab.metrics.regression import VectorErrors
from difflab.nets.cnn import SmallCNN
from difflab.utils.config import register_resolvers
from difflab.utils.stored_config import instantiate_stored

log = logging.getLogger(__name__)


def data_stats(datamodule: Any) -> CondStats:
    """The vector statistics of a data module's training split (set up here); a ConfigError for data without vectors."""
    datamodule.setup("fit")
    stats = getattr(datamodule, "cond_stats", None)
    if stats is None:
        raise ConfigError(f"The condition regressor reads a vector of values per image, and data={datamodule.name} has "
                          "none: use data=shapes, or data=csv data.csv=<file> data.columns=[...].")
    return stats


def regression_loss(predicted: Tensor, z: Tensor, beta: float = 0.1) -> Tensor:
    """Smooth-L1 loss between predicted and true z-scores [B, D] (quadratic below `beta` std), averaged."""
    return F.smooth_l1_loss(predicted.float(), z.float(), beta=beta)


class RegressorModule(L.LightningModule):
    """`net` maps images [B, C, H, W] in [-1, 1] to z-scores [B, D] of the data's vector (see the module docstring)."""

    def __init__(self, net: nn.Module, optimizer: OptimizerFactory | None = None,
                 lr_scheduler: LRSchedulerFactory | None = None, loss_beta: float = 0.1) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.loss_beta = float(loss_beta)
        self.stats: CondStats | None = None          # the training split's statistics (data module or checkpoint)
        self.image_shape: tuple[int, int, int] | None = None  # (C, R, R) of the training images
        self.val_errors: VectorErrors | None = None
        self.last_val: dict[str, float] = {}         # the latest validation numbers, saved in checkpoints
        self.run_config: dict[str, Any] | None = None
        self.train_images_seen = 0

    @property
    def columns(self) -> list[str]:
        """The names of the values it reads."""
        return list(self._stats().columns)

    def _stats(self) -> CondStats:
        if self.stats is None:
            raise RuntimeError("the regressor has no condition statistics yet: fit it to a data module first")
        return self.stats

    def fit_to(self, datamodule: Any) -> RegressorModule:
        """Take the statistics and image shape of `datamodule` (set up here), checking that its vectors fit the net."""
        stats = data_stats(datamodule)
        if getattr(self.net, "outputs", stats.dim) != stats.dim or getattr(self.net, "channels", None) not in (
                None, datamodule.channels):
            raise ConfigError.bad_value("model.net", f"{self.net.outputs} outputs for {self.net.channels} channels, but "
                                        f"the data has {stats.dim} values {stats.columns} and {datamodule.channels} "
                                        "channels", "Leave model.net.outputs=${data.cond_dim} and "
                                        "model.net.channels=${data.channels}.")
        self.stats = stats
        self.image_shape = (int(datamodule.channels), int(datamodule.resolution), int(datamodule.resolution))
        return self

    def setup(self, stage: str) -> None:
        """The statistics of the data module the Trainer attached."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.fit_to(datamodule)

    def forward(self, images: Tensor) -> Tensor:
        """Images [B, C, H, W] in [-1, 1] -> z-scores [B, D]."""
        return self.net(images)

    def targets(self, batch: dict[str, Tensor]) -> Tensor:
        """The z-scores [B, D] of a batch's vectors (which the data module encoded: z-scores, or raw values)."""
        stats = self._stats()
        return stats.zscore(stats.decode(batch["cond"]))

    def loss(self, predicted: Tensor, z: Tensor) -> Tensor:
        """`regression_loss` at this module's `loss_beta`."""
        return regression_loss(predicted, z, self.loss_beta)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Raw values [N, D] of images [N, C, H, W] in [-1, 1] (resized to the training resolution when they differ)."""
        channels, resolution = self.image_shape[0], self.image_shape[-1]
        if images.shape[1] != channels:
            raise ConfigError(f"The regressor reads {channels}-channel images and was given {images.shape[1]} channels: "
                              "use a regressor trained on the same kind of images.")
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = resize_square(images[start : start + batch_size].float().to(self.device), resolution)
            out.append(self._stats().unzscore(self(x).float()).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.columns))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["image"]
        loss = self.loss(self(x), self.targets(batch))
        self.train_images_seen += x.shape[0] * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_errors = VectorErrors(self._stats()).to(self.device)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, z = batch["image"], self.targets(batch)
        predicted = self(x)
        self.log("val/loss", self.loss(predicted, z), prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        stats = self._stats()
        self.val_errors.update(stats.unzscore(predicted.float()), stats.unzscore(z))

    def on_validation_epoch_end(self) -> None:
        """Per-column MAE (raw, std units) and R2 of the whole validation split (reduced across ranks), logged."""
        if self.val_errors is None or int(self.val_errors.total) == 0:
            return
        self.last_val = self.val_errors.flat()
        self.log_dict({f"val/{k}": v for k, v in self.last_val.items()})  # equal on every rank
        if self.trainer.is_global_zero:
            log.info("step %d validation: MAE %.4g (raw), %.3f (std units), R2 %.3f; R2 per column %s",
                     self.global_step, self.last_val["mae"], self.last_val["mae_std"], self.last_val["r2"],
                     {c: round(self.last_val[f"r2/{c}"], 3) for c in self.columns})

    def configure_optimizers(self) -> Any:
        """The optimizer and per-step LR schedule exactly as configured."""
        return trainable_optimizers(self, self.optimizer_factory, self.lr_scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The resolved run config, the statistics, the image shape and the latest validation numbers."""
        checkpoint["config"] = self.run_config
        checkpoint["train_images_seen"] = self.train_images_seen
        checkpoint["cond_stats"] = self._stats().to_dict()
        checkpoint["image_shape"] = list(self.image_shape)
        checkpoint["regressor_val"] = dict(self.last_val)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_state_dict_compatible(checkpoint.get("state_dict", {}), self.state_dict(), checkpoint.get("config"),
                                    self.run_config)
        self.train_images_seen = int(checkpoint.get("train_images_seen", 0))
        self.restore(checkpoint)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Statistics, image shape and validation numbers from a checkpoint."""
        self.stats = CondStats.from_dict(checkpoint["cond_stats"])
        self.image_shape = tuple(int(v) for v in checkpoint["image_shape"])
        self.last_val = dict(checkpoint.get("regressor_val") or {})


def default_regressor(datamodule: Any, width: int = 32) -> RegressorModule:
    """The regressor of `model=regressor`'s defaults (SmallCNN with coordinate channels), fitted to `datamodule`'s
    statistics: what the cond_mae metric trains when it is given no regressor checkpoint."""
    net = SmallCNN(datamodule.channels, data_stats(datamodule).dim, width=width, coords=True)
    return RegressorModule(net).fit_to(datamodule)


def load_regressor(path: str | Path, key: str = "ckpt", device: torch.device | str = "cpu",
                   use_ema: bool = True, ckpt: dict[str, Any] | None = None) -> RegressorModule:
    """A `model=regressor` checkpoint's regressor in eval mode; any other checkpoint is an IncompatibleCheckpointError
    naming `key`. `ckpt`: the file's content when the caller has read it already."""
    register_resolvers()
    ckpt = read_checkpoint(path, key=key) if ckpt is None else ckpt
    require_model(ckpt, path, key, lambda cls: issubclass(cls, RegressorModule), "a condition regressor",
                  "Train one with `python train.py model=regressor data=<the data of the images>` and pass its "
                  f"checkpoints/last.ckpt as {key}=...")
    module = instantiate_stored(ckpt["config"]["model"], path, "model", key)
    module.run_config = ckpt["config"]
    module.checkpoint_path = str(path)
    module.restore(ckpt)
    load_weights(module, ckpt, use_ema, path, key)
    return module.to(device).eval()
