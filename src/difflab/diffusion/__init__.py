"""The math of diffusion: schedules, preconditioning, losses (all in the sigma view)."""

from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.precond import Denoiser, Scalings, vp_scalings
from difflab.diffusion.schedules import DiscreteVPScheduler, Scheduler, karras_sigmas

__all__ = ["DiffusionLoss", "Denoiser", "DiscreteVPScheduler", "Scalings", "Scheduler", "karras_sigmas", "vp_scalings"]
