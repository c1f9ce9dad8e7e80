"""Samplers: pure functions over a denoiser, one family per file, all in `SAMPLERS`."""

from difflab.samplers import (  # noqa: F401  (register the samplers)
    adaptive, ancestral, consistency, dpm_solver, dpm_solver_eps, euler, multistep, ode, restart, sde, singlestep, unipc,
)
from difflab.samplers.ode import probability_flow
from difflab.samplers.base import SAMPLERS, StackedGenerator, randn_like, register
from difflab.samplers.generate import Edit, SamplerSpec, generate, is_deterministic, sample_seeds, slerp

__all__ = ["SAMPLERS", "Edit", "probability_flow", "SamplerSpec", "StackedGenerator", "generate", "is_deterministic",
           "randn_like", "register", "sample_seeds", "slerp"]
