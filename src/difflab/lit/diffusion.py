"""The LightningModule of a diffusion model: glue between net, scheduler, loss and sampler.

EMA, sample grids and metrics are callbacks; this module only trains, validates and samples.
The diffusion runs on what the frozen first stage `autoencoder` encodes: the images themselves for pixel
models (the identity, the default), the scaled latents of latent diffusion (Rombach et al. 2022).
`image_shape` stays the shape of the data images, `latent_shape` is what the net sees, and `generate`
decodes back to images. The model's `condition` (`difflab.conditions`) says what it is conditioned on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from difflab.conditions import Condition, NoCondition
from difflab.errors import ConfigError, UserError
from difflab.diffusion.guidance import guided
from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.denoiser import DenoiseFn
from difflab.diffusion.precond import Denoiser
from difflab.diffusion.schedules import Scheduler
from difflab.lit.checkpoint import check_state_dict_compatible
from difflab.lit.inference import SamplingNetworks, channels_last_on, check_channels_last, check_switch
from difflab.lit.optim import LRSchedulerFactory, OptimizerFactory, trainable_optimizers
from difflab.lit.latent import estimate_scale_factor
from difflab.metrics.inception import grid_embed
from difflab.nets.autoencoder import IdentityFirstStage, LatentAutoencoder
from difflab.samplers.base import StepCallback
from difflab.samplers.generate import Edit, SamplerSpec, generate
from difflab.utils.cluster import run_seed
from difflab.utils.progress import Progress



class NonFiniteSamplesError(UserError, FloatingPointError):
    """Sampling produced NaN or infinite values: no image is made from them (never a black image with exit 0)."""


def check_finite_images(x: Tensor, batch_size: int, first_index: int, seed: int, stage: str, fix: str) -> None:
    """A NonFiniteSamplesError naming `stage`, the first batch (of `batch_size` images from `first_index`) and
    how many images hold NaN or infinite values, when any does; `fix` says what to try."""
    bad = ~torch.isfinite(x.flatten(1)).all(1)  # (n,)
    if not bool(bad.any()):
        return
    k = int(bad.nonzero()[0]) // batch_size
    lo, hi = first_index + k * batch_size, first_index + min((k + 1) * batch_size, x.shape[0]) - 1
    raise NonFiniteSamplesError(f"{stage} produced NaN or infinite values in {int(bad.sum())} of {x.shape[0]} images, "
                                f"first in batch {k} (images {lo}-{hi} of seed {seed}); no image was made from them. "
                                f"{fix}")


class DiffusionModule(L.LightningModule):
    """Trains D = precond(net, scheduler) with `loss`; samples with `sampler` (in pixel space, or in the latent
    space of a frozen `autoencoder`), conditioned on its `condition`."""

    def __init__(
        self,
        net: nn.Module,
        scheduler: Scheduler,
        loss: DiffusionLoss,
        optimizer: OptimizerFactory,
        image_shape: tuple[int, int, int] | list[int],
        lr_scheduler: LRSchedulerFactory | None = None,
        sampler: SamplerSpec | None = None,
        condition: Condition | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        channels_last: bool | str = "auto",
        compile: bool = False,
        compile_sampling: bool = False,
        autoencoder: LatentAutoencoder | IdentityFirstStage | None = None,
        scale_factor_images: int = 1024,
    ) -> None:
        super().__init__()
        self.denoiser = Denoiser(net, scheduler)
        self.autoencoder = (autoencoder or IdentityFirstStage()).requires_grad_(False)  # frozen first stage
        self.scale_factor_images = int(scale_factor_images)  # training images used for 1/std(z) when not given
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.sampler = sampler or SamplerSpec()
        self.grid_cache: Path | None = None  # where grid=optimized keeps its grids (set from the checkpoint on load)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.condition = condition or NoCondition()  # what the model is conditioned on, its dropout and null value
        self.guidance_scale, self.guidance_rescale = float(guidance_scale), float(guidance_rescale)
        self.channels_last = check_channels_last(channels_last)  # true | false | auto (channels_last on the CPU)
        self.compile_net = check_switch(compile, "model.compile")
        self.compile_sampling = check_switch(compile_sampling, "model.compile_sampling")  # the sampler's network call
        self._sampling_calls = SamplingNetworks()  # the network as `generate` runs it (lit/inference.py)
        self._train_channels_last: bool | None = None  # channels_last_on(channels_last, training device), set in configure_model
        self.run_config: dict[str, Any] | None = None  # the resolved config, set by the CLI, saved in checkpoints
        self.train_images_seen = 0  # over all ranks and micro-batches; saved in checkpoints

    @property
    def net(self) -> nn.Module:
        """The raw network F."""
        return self.denoiser.net

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of what the net denoises: the latents of `image_shape` (the images themselves in pixel space)."""
        return self.autoencoder.latent_shape(self.image_shape)

    def encode(self, x: Tensor, sample: bool = True) -> Tensor:
        """Images in [-1, 1] -> what diffusion runs on (scaled latents, a posterior sample or its mean; identity in pixel space)."""
        return self.autoencoder.encode(x, sample=sample)

    def decode(self, z: Tensor) -> Tensor:
        """The inverse of `encode`: scaled latents -> images in [-1, 1] (identity in pixel space)."""
        return self.autoencoder.decode(z)

    @property
    def scheduler(self) -> Scheduler:
        """The noise schedule and preconditioning."""
        return self.denoiser.scheduler

    def configure_model(self) -> None:
        """Memory format and compilation switches, applied once before training."""
        self._train_channels_last = channels_last_on(self.channels_last, self.trainer.strategy.root_device)
        self.net.to(memory_format=torch.channels_last if self._train_channels_last else torch.contiguous_format)
        if self.compile_net and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def setup(self, stage: str) -> None:
        """The condition takes what it needs from the data module (vector statistics) and checks it fits."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.condition.setup(datamodule)
            shape = (getattr(datamodule, "channels", None), getattr(datamodule, "resolution", None))
            if None not in shape and shape != (self.image_shape[0], self.image_shape[-1]):
                raise ConfigError.bad_value("data.resolution", f"the data has {shape[0]} channels at {shape[1]} pixels, "
                                            f"but the model makes images {self.image_shape}", "Set data.resolution and "
                                            "data.channels to the model's (e.g. a pretrained pipeline's) image size.")

    def on_fit_start(self) -> None:
        """Latent models: 1 / std of the training latents (LDM App. G) when no scale factor is set; logged."""
        if not self.autoencoder.has_scale_factor:
            value = estimate_scale_factor(self.autoencoder, self.trainer.datamodule, self.scale_factor_images, self.device)
            self.autoencoder.set_scale_factor(value)
        values = self.autoencoder.log_values()
        for logger in self.trainer.loggers if values else ():
            logger.log_metrics(values, step=self.trainer.global_step)

    def _inputs(
        self, batch: dict[str, Tensor], drop: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if "latent_mean" in batch:  # cached posteriors (data.cache_latents=true): z = mean + std * eps, scaled
            z = batch["latent_mean"] + batch["latent_std"] * torch.randn_like(batch["latent_std"])
            x0 = self.autoencoder.scale(z)
        else:
            x0 = self.encode(batch["image"], sample=self.training)  # (B, C, H, W) in [-1, 1] or latents (B, c, H/f, W/f); val: the mean
        if self._train_channels_last if self._train_channels_last is not None else channels_last_on(self.channels_last, x0.device):
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, self.condition.from_batch(batch, self.training, drop)

    def _global_batch_generator(self, batch_idx: int, device: torch.device) -> torch.Generator:
        """The generator of this step's global batch, seeded by (run seed, step, batch index), the same on every rank."""
        seed = ((run_seed() * 1_000_003 + self.trainer.global_step) * 1_000_003 + batch_idx) % 2**63
        return torch.Generator(device).manual_seed(seed)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One denoising-loss step; returns the mean loss (the per-example loss comes from `loss`).

        Every rank draws the condition dropout and noise of the whole global batch and keeps its rows
        [r B, (r + 1) B), so N processes train on the draws of one process at the same global batch."""
        first = batch["image"] if "image" in batch else batch["latent_mean"]  # pixels, or cached latents
        world, rank, b = self.trainer.world_size, self.trainer.global_rank, first.shape[0]
        gen = self._global_batch_generator(batch_idx, first.device)
        rows = slice(rank * b, (rank + 1) * b)
        x0, cond = self._inputs(batch, drop=torch.rand(b * world, generator=gen, device=gen.device)[rows])
        sigma, eps = self.loss_fn.draw_noise(self.denoiser, x0, n=b * world, generator=gen)
        loss = self.loss_fn(self.denoiser, x0, cond, noise=(sigma[rows], eps[rows])).mean()
        self.train_images_seen += b * world
        # the mean over ranks is the global batch's mean loss (equal shards)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=b, sync_dist=world > 1)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Validation loss with noise fixed per batch index, so epochs are comparable."""
        x0, cond = self._inputs(batch)
        gen = torch.Generator(x0.device).manual_seed(batch_idx)
        loss = self.loss_fn(self.denoiser, x0, cond, generator=gen).mean()
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])

    def configure_optimizers(self) -> Any:
        """The optimizer (and per-step LR schedule) exactly as configured: the LR in the config is the LR that runs."""
        return trainable_optimizers(self, self.optimizer_factory, self.lr_scheduler_factory)

    def sampling_spec(self, sampler: SamplerSpec | None = None) -> SamplerSpec:
        """The sampler that `generate` runs: `clip_denoised="auto"` thresholds pixel models and leaves latent ones."""
        return (sampler or self.sampler).resolve(pixel_space=isinstance(self.autoencoder, IdentityFirstStage))

    def generate(
        self,
        n: int,
        seed: int = 0,
        batch_size: int | None = None,
        sampler: SamplerSpec | None = None,
        cond: Any = None,
        first_index: int = 0,
        guidance_scale: float | None = None,
        guidance_rescale: float | None = None,
        edit: Edit | None = None,
        uncond: Any = None,
        callback: StepCallback | None = None,
        progress: Progress | None = None,
    ) -> tuple[Tensor, int]:
        """Sample images first_index .. first_index + n - 1 of the run seeded `seed`, in [-1, 1] (float32, CPU),
        with the current weights; returns (images, NFE per image). Latent models sample latents and decode them
        (an `edit`'s noise is in latent shape; its init images are encoded and its mask resized).

        Conditional models apply classifier-free guidance with `guidance_scale` (default: the model's
        `guidance_scale`; 1 = plain conditional, see `difflab.diffusion.guidance`); `uncond` replaces the null
        condition of the unconditional branch (e.g. a negative prompt's embedding). `progress` counts the images;
        `callback` is the samplers' step hook (the studio's progress bar and Stop button: raising cancels).
        Sampling runs under `torch.inference_mode`, the network as `difflab.lit.inference` runs it: wholly in bf16
        / fp16 under such an autocast, channels_last where that pays, compiled with `compile_sampling`."""
        spec = self.sampling_spec(sampler)
        optimized = spec.scheduler_for(self.scheduler).grid == "optimized"
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        rescale = self.guidance_rescale if guidance_rescale is None else float(guidance_rescale)
        was_training = self.training
        self.eval()
        try:
            denoise_fn = self._sampling_denoiser(cond, scale, rescale, uncond)  # may set the memory format
            b = batch_size or n
            with torch.inference_mode():
                x, nfe = generate(
                    denoise_fn,
                    self.scheduler,
                    spec,
                    n=n,
                    shape=self.latent_shape,
                    seed=seed,
                    batch_size=batch_size,
                    device=self.device,
                    cond=cond,
                    first_index=first_index,
                    edit=self._latent_edit(edit, b),
                    grid_cache=self.grid_cache,
                    callback=callback,
                    progress=progress,
                    embed=grid_embed(spec, self.latent_shape, self.device) if optimized else None,
                )
                fix = (f"Try another sampler or more steps (now sampler={spec.name}"
                       + (f" sampler.steps={spec.steps}" if spec.steps else "") + "), precision=32"
                       + (f", a lower guidance_scale (it is {scale:g})" if cond is not None else "")
                       + ", or an earlier checkpoint of the run.")
                check_finite_images(x, b, first_index, seed, f"The sampler ({spec.name})", fix)
                x = self._decode_batches(x, b)
                check_finite_images(x, b, first_index, seed, "Decoding the latents", fix)
                x = x.clamp(-1, 1)
        finally:
            self.train(was_training)
            if not self.compile_sampling:
                self._sampling_calls.clear()  # the weight copy of a bf16/fp16 run is not kept
        return x.clone(), nfe  # outside inference mode: a normal tensor that callers may change in place

    def _sampling_denoiser(self, cond: Tensor | None, scale: float, rescale: float,
                           uncond: Tensor | None) -> DenoiseFn:
        """D for sampling: the network as `lit/inference.py` runs it (sampling dtype, memory format, compiled
        call), guided when conditioned (see `generate`)."""
        call = self._sampling_calls.get(self.net, self.device, channels_last_on(self.channels_last, self.device),
                                        self.compile_sampling)
        denoiser = Denoiser(call, self.scheduler)
        if cond is None:
            return denoiser
        return guided(denoiser, scale, rescale, null=uncond if uncond is not None else self.condition.null)

    def _decode_batches(self, z: Tensor, batch_size: int) -> Tensor:
        """Decode CPU latents [n, c, h, w] on this module's device, `batch_size` at a time -> CPU images."""
        return torch.cat([self.decode(z[i : i + batch_size].to(self.device)).cpu() for i in range(0, z.shape[0], batch_size)])

    def _latent_edit(self, edit: Edit | None, batch_size: int) -> Edit | None:
        """An image-space edit in the latent space: init images encoded (posterior mean), mask resized (nearest)."""
        if edit is None or edit.init is None:
            return edit
        init = torch.cat([self.autoencoder.encode(edit.init[i : i + batch_size].to(self.device), sample=False).cpu()
                          for i in range(0, edit.init.shape[0], batch_size)])
        mask = None
        if edit.mask is not None:
            mask = torch.nn.functional.interpolate(edit.mask[:, :1].float(), size=init.shape[-2:], mode="nearest")
            mask = mask.expand(-1, init.shape[1], -1, -1)
        return Edit(edit.noise, init, edit.strength, mask)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every checkpoint carries the resolved run config and the RNG states; its weights are in the standard
        (contiguous) layout whatever memory format trained them (`model.channels_last`)."""
        checkpoint["state_dict"] = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}
        checkpoint["config"] = self.run_config
        checkpoint["train_images_seen"] = self.train_images_seen
        checkpoint.update(self.condition.state_dict())  # e.g. the vector statistics ("cond_stats")
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, with one clear message, a checkpoint whose network differs from this one."""
        check_state_dict_compatible(
            checkpoint.get("state_dict", {}), self.state_dict(), checkpoint.get("config"), self.run_config
        )
        self.train_images_seen = int(checkpoint.get("train_images_seen", 0))
        self.condition.load_state_dict(checkpoint)
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
