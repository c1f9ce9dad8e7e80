"""The math of diffusion: schedules, preconditioning, losses (all in the sigma view), flow matching included."""

from difflab.diffusion.continuous import (
    ContinuousScheduler,
    EDMScheduler,
    VEScheduler,
    geometric_sigmas,
)
from difflab.diffusion.flow import FlowScheduler
from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.precond import (
    Denoiser,
    Scalings,
    edm_scalings,
    flow_scalings,
    ve_scalings,
    vp_scalings,
)
from difflab.diffusion.schedules import DiscreteVPScheduler, Scheduler, karras_sigmas
from difflab.diffusion.sde import SubVPSDEScheduler, VPSDEScheduler

__all__ = [
    "SubVPSDEScheduler",
    "VPSDEScheduler",
    "ContinuousScheduler",
    "Denoiser",
    "DiffusionLoss",
    "DiscreteVPScheduler",
    "EDMScheduler",
    "FlowScheduler",
    "Scalings",
    "Scheduler",
    "VEScheduler",
    "edm_scalings",
    "flow_scalings",
    "geometric_sigmas",
    "karras_sigmas",
    "ve_scalings",
    "vp_scalings",
]
