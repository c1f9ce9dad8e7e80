"""The LightningModule of a diffusion model: glue between net, scheduler, loss and sampler.

EMA, sample grids and metrics are callbacks; this module only trains, validates and samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from difflab.diffusion.guidance import guided, null_labels
from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.precond import Denoiser
from difflab.diffusion.schedules import Scheduler
from difflab.lit.checkpoint import check_state_dict_compatible
from difflab.samplers.generate import Edit, SamplerSpec, generate

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
LRSchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class DiffusionModule(L.LightningModule):
    """Trains D = precond(net, scheduler) with `loss`; samples with `sampler` (pixel space)."""

    def __init__(
        self,
        net: nn.Module,
        scheduler: Scheduler,
        loss: DiffusionLoss,
        optimizer: OptimizerFactory,
        image_shape: tuple[int, int, int] | list[int],
        lr_scheduler: LRSchedulerFactory | None = None,
        sampler: SamplerSpec | None = None,
        cond_key: str | None = None,
        cond_drop_prob: float = 0.0,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.denoiser = Denoiser(net, scheduler)
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.sampler = sampler or SamplerSpec()
        self.image_shape = tuple(int(v) for v in image_shape)
        self.cond_key = cond_key
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"model.cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        self.cond_drop_prob = float(cond_drop_prob)  # condition dropout to the null class (classifier-free guidance)
        self.guidance_scale, self.guidance_rescale = float(guidance_scale), float(guidance_rescale)
        self.channels_last = channels_last
        self.compile_net = compile
        self.run_config: dict[str, Any] | None = None  # the resolved config, set by the CLI, saved in checkpoints
        self.train_images_seen = 0  # over all ranks and micro-batches; saved in checkpoints
        self.cond_stats: Any = None  # vector conditions: the data's CondStats (z-scoring), saved in checkpoints

    @property
    def net(self) -> nn.Module:
        """The raw network F."""
        return self.denoiser.net

    @property
    def scheduler(self) -> Scheduler:
        """The noise schedule and preconditioning."""
        return self.denoiser.scheduler

    def configure_model(self) -> None:
        """Memory format and compilation switches, applied once before training."""
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def setup(self, stage: str) -> None:
        """Take the vector-condition statistics of the data module (computed on its training split)."""
        stats = getattr(getattr(self.trainer, "datamodule", None), "cond_stats", None)
        if stats is not None:
            self.cond_stats = stats

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        x0 = batch["image"]  # (B, C, H, W) in [-1, 1]
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        cond = batch[self.cond_key] if self.cond_key is not None else None
        if cond is not None and self.training and self.cond_drop_prob > 0:
            drop = torch.rand(cond.shape[0], device=cond.device) < self.cond_drop_prob  # (B,)
            cond = torch.where(drop.reshape(-1, *([1] * (cond.ndim - 1))), null_labels(cond), cond)
        return x0, cond

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One denoising-loss step; returns the mean loss (the per-example loss comes from `loss`)."""
        x0, cond = self._inputs(batch)
        loss = self.loss_fn(self.denoiser, x0, cond).mean()
        self.train_images_seen += x0.shape[0] * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Validation loss with noise fixed per batch index, so epochs are comparable."""
        x0, cond = self._inputs(batch)
        gen = torch.Generator(x0.device).manual_seed(batch_idx)
        loss = self.loss_fn(self.denoiser, x0, cond, generator=gen).mean()
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])

    def configure_optimizers(self) -> Any:
        """The optimizer (and per-step LR schedule) exactly as configured: the LR in the config is the LR that runs."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        schedule = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @torch.no_grad()
    def generate(
        self,
        n: int,
        seed: int = 0,
        batch_size: int | None = None,
        sampler: SamplerSpec | None = None,
        cond: Tensor | None = None,
        first_index: int = 0,
        guidance_scale: float | None = None,
        guidance_rescale: float | None = None,
        edit: Edit | None = None,
    ) -> tuple[Tensor, int]:
        """Sample images first_index .. first_index + n - 1 of the run seeded `seed`, in [-1, 1] (float32, CPU),
        with the current weights; returns (images, NFE per image).

        Conditional models apply classifier-free guidance with `guidance_scale` (default: the model's
        `guidance_scale`; 1 = plain conditional, see `difflab.diffusion.guidance`)."""
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        rescale = self.guidance_rescale if guidance_rescale is None else float(guidance_rescale)
        denoise_fn = guided(self.denoiser, scale, rescale) if cond is not None else self.denoiser
        was_training = self.training
        self.eval()
        try:
            x, nfe = generate(
                denoise_fn,
                self.scheduler,
                sampler or self.sampler,
                n=n,
                shape=self.image_shape,
                seed=seed,
                batch_size=batch_size,
                device=self.device,
                cond=cond,
                first_index=first_index,
                edit=edit,
            )
        finally:
            self.train(was_training)
        return x.clamp(-1, 1), nfe

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every checkpoint carries the resolved run config and the RNG states."""
        checkpoint["config"] = self.run_config
        checkpoint["train_images_seen"] = self.train_images_seen
        if self.cond_stats is not None:
            checkpoint["cond_stats"] = self.cond_stats.to_dict()
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, with one clear message, a checkpoint whose network differs from this one."""
        check_state_dict_compatible(
            checkpoint.get("state_dict", {}), self.state_dict(), checkpoint.get("config"), self.run_config
        )
        self.train_images_seen = int(checkpoint.get("train_images_seen", 0))
        if checkpoint.get("cond_stats"):
            from difflab.data.vectors import CondStats

            self.cond_stats = CondStats.from_dict(checkpoint["cond_stats"])
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
