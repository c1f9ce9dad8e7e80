"""The first stage of latent diffusion: a KL-regularised autoencoder (Rombach et al. 2022, Sec. 3 and App. G).

Loss (LDM's `LPIPSWithDiscriminator`, from taming-transformers; per example, then averaged):

    rec  = |x - x_hat|_1 (or squared) + perceptual_weight * LPIPS(x, x_hat)      per pixel, mean
    nll  = rec / exp(logvar) + logvar          (logvar: one learned scalar, LDM initialises it at 0)
    L_G  = nll + kl_weight * KL(q(z|x) || N(0, I)) + lambda * disc_factor * (-D(x_hat))
    L_D  = disc_factor * hinge(D(x), D(x_hat)) = relu(1 - D(x)) + relu(1 + D(x_hat))
    lambda = disc_weight * |grad_last nll| / (|grad_last (-D(x_hat))| + 1e-4)   (adaptive weight, VQGAN eq. 7)

disc_factor is 0 before `disc_start` optimizer steps. One optimizer holds both the autoencoder and the
discriminator: L_G reaches the discriminator only through a weight-detached call, L_D only through
detached reconstructions, so one `backward` of L_G + L_D gives each network its own gradient
(simultaneous rather than alternating updates), and Lightning's automatic optimisation, gradient
clipping, LR schedule, EMA and step counting apply unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from difflab.conditions import NoCondition
from difflab.lit.checkpoint import check_state_dict_compatible
from difflab.lit.optim import LRSchedulerFactory, OptimizerFactory, trainable_optimizers
from difflab.metrics.perceptual import LPIPS_MIN_SIZE, lpips_network
from difflab.utils.weights import MetricWeightsError
from difflab.nets.autoencoder import KLAutoencoder
from difflab.samplers.generate import sample_seeds
from difflab.utils.config import config_choice

log = logging.getLogger(__name__)



class PerceptualLoss(nn.Module):
    """LPIPS(x, y) [B] on [-1, 1] images, differentiable in the inputs (grey images repeated to RGB,
    images smaller than 64 px upsampled as the LPIPS metric does)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)

    @staticmethod
    def _prepare(x: Tensor) -> Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
            x = F.interpolate(x, size=(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(self._prepare(x.float()), self._prepare(y.float())).reshape(-1)


def lpips_loss(weights: str | None = None, download: bool = True, required: bool = False,
               loss_weight: float = 1.0) -> PerceptualLoss | None:
    """The LPIPS perceptual loss with the metric suite's weights resolution (`metrics.weights.lpips_alexnet`);
    None when `loss_weight` is 0 (nothing is loaded).

    Missing weights: `required` raises the resolution error; otherwise a warning says the perceptual term is
    off and how to turn it on (the training objective is then L1/L2 + KL (+ GAN); the checkpoint records it).
    """
    if loss_weight <= 0:
        return None
    try:
        return PerceptualLoss(lpips_network(weights, download=download)[0])
    except MetricWeightsError as err:
        if required:
            raise
        prefix = stage1_prefix()
        log.warning("perceptual (LPIPS) loss OFF: %s Set %sperceptual.weights=<the file> to train with it, or "
                    "%sperceptual_weight=0 to silence this warning.", err, prefix, prefix)
        return None


def stage1_prefix() -> str:
    """Where the running command keeps the autoencoder's training settings: `model.` for `model=vae`, and
    `model.autoencoder.stage1.` for the stage 1 that a latent model (`model=ldm`) trains first."""
    return "model." if config_choice("model", "vae") == "vae" else "model.autoencoder.stage1."


class AutoencoderModule(L.LightningModule):
    """Trains a `KLAutoencoder` (stage 1); reconstruction metrics are the `ReconstructionMetrics` callback."""

    def __init__(
        self,
        net: KLAutoencoder,
        optimizer: OptimizerFactory,
        lr_scheduler: LRSchedulerFactory | None = None,
        perceptual: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        reconstruction: str = "l1",
        perceptual_weight: float = 1.0,
        kl_weight: float = 1.0e-6,
        disc_weight: float = 0.5,
        disc_start: int = 50001,
        logvar_init: float = 0.0,
    ) -> None:
        super().__init__()
        if reconstruction not in ("l1", "l2"):
            raise ValueError(f"Bad value for config key `model.reconstruction`: {reconstruction!r}; use l1 or l2")
        self.net, self.discriminator = net, discriminator
        # a fixed loss network: kept out of the state dict (not a submodule), moved with the data
        self._perceptual = [perceptual] if perceptual is not None and perceptual_weight > 0 else []
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.reconstruction = reconstruction
        self.perceptual_weight = float(perceptual_weight) if self.perceptual is not None else 0.0
        self.image_shape: tuple[int, int, int] = (net.in_channels, 0, 0)  # set from the data at fit start
        self.kl_weight, self.disc_weight, self.disc_start = float(kl_weight), float(disc_weight), int(disc_start)
        self.logvar = nn.Parameter(torch.tensor(float(logvar_init)))
        self.run_config: dict[str, Any] | None = None
        self.condition = NoCondition()  # stage 1 is unconditional (the sample-grid callback asks every model)
        self.train_images_seen = 0

    @property
    def perceptual(self) -> nn.Module | None:
        """The LPIPS loss network (None when off)."""
        return self._perceptual[0] if self._perceptual else None

    @property
    def latent_channels(self) -> int:
        return self.net.latent_channels

    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor:
        """x in [-1, 1] -> decode(encode(x)) (posterior mean unless `sample`), clamped to [-1, 1]."""
        x_hat, _ = self.net(x, sample=sample)
        return x_hat.clamp(-1.0, 1.0)

    def _rec_loss(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per-pixel reconstruction (+ perceptual) loss [B, C, H, W]."""
        rec = (x - x_hat).abs() if self.reconstruction == "l1" else (x - x_hat).pow(2)
        if self.perceptual is not None:
            lpips = self.perceptual.to(x.device)(x, x_hat)  # [B]
            rec = rec + self.perceptual_weight * lpips[:, None, None, None]
        return rec

    def _adaptive_weight(self, nll: Tensor, g_loss: Tensor) -> Tensor:
        """VQGAN eq. 7: balance the GAN gradient against the reconstruction gradient at the decoder's last layer."""
        last = self.net.dec_out[-1].weight
        g_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
        g_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        return (g_nll.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4).detach() * self.disc_weight

    def losses(self, x: Tensor, step: int, train: bool = True) -> dict[str, Tensor]:
        """All loss terms (scalars) for images x; `total` is what is minimised."""
        x_hat, posterior = self.net(x, sample=True)
        rec = self._rec_loss(x, x_hat)
        nll = (rec / torch.exp(self.logvar) + self.logvar).flatten(1).sum(1).mean()  # LDM sums over pixels
        kl = posterior.kl().mean()
        out = {"rec": rec.mean(), "nll": nll, "kl": kl, "logvar": self.logvar.detach()}
        total = nll + self.kl_weight * kl
        if self.discriminator is not None and step >= self.disc_start:
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            g_loss = -functional_call(self.discriminator, frozen, (x_hat,)).mean()  # grads reach x_hat only
            weight = self._adaptive_weight(nll, g_loss) if train and torch.is_grad_enabled() else torch.tensor(0.0)
            real, fake = self.discriminator(x.detach()), self.discriminator(x_hat.detach())
            d_loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())  # hinge
            total = total + weight * g_loss + d_loss
            out.update({"g_loss": g_loss, "d_loss": d_loss, "disc_weight": weight})
        out["total"] = total
        return out

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        self.image_shape = (int(dm.channels), int(dm.resolution), int(dm.resolution))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["image"]
        terms = self.losses(x, self.global_step)
        self.train_images_seen += x.shape[0] * self.trainer.world_size
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=x.shape[0])
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "total"}, batch_size=x.shape[0])
        return terms["total"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Validation: the reconstruction loss of the posterior mean (no GAN terms), fixed per batch."""
        x = batch["image"]
        x_hat = self.reconstruct(x)
        self.log("val/loss", self._rec_loss(x, x_hat).mean(), prog_bar=True, sync_dist=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> Any:
        return trainable_optimizers(self, self.optimizer_factory, self.lr_scheduler_factory)

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, batch_size: int | None = None, cond: Tensor | None = None,
                 **_: Any) -> tuple[Tensor, int]:
        """Decodes of prior samples z ~ N(0, I) (one seed per image), for the sample-grid callback; (images, 0)."""
        c, h, w = self.image_shape
        f = self.net.downsample_factor
        seeds = sample_seeds(seed, n)
        z = torch.stack([torch.randn(self.latent_channels, h // f, w // f, generator=torch.Generator().manual_seed(s))
                         for s in seeds])
        step = batch_size or n
        out = [self.net.decode(z[i : i + step].to(self.device)).clamp(-1, 1).float().cpu() for i in range(0, n, step)]
        return torch.cat(out), 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["config"] = self.run_config
        checkpoint["train_images_seen"] = self.train_images_seen
        checkpoint["perceptual_active"] = self.perceptual is not None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_state_dict_compatible(checkpoint.get("state_dict", {}), self.state_dict(), checkpoint.get("config"),
                                    self.run_config)
        self.train_images_seen = int(checkpoint.get("train_images_seen", 0))
