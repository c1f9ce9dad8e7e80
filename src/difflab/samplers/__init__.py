"""Samplers: pure functions over a denoiser, one family per file, all in `SAMPLERS`."""

from difflab.samplers import adaptive, ancestral, consistency, dpm_solver, euler, multistep, ode, sde, singlestep, unipc  # noqa: F401,E501  (register the samplers)
from difflab.samplers.ode import probability_flow
from difflab.samplers.base import SAMPLERS, StackedGenerator, randn_like, register
from difflab.samplers.generate import Edit, SamplerSpec, generate, is_deterministic, sample_seeds, slerp

__all__ = ["SAMPLERS", "Edit", "probability_flow", "SamplerSpec", "StackedGenerator", "generate", "is_deterministic",
           "randn_like", "register", "sample_seeds", "slerp"]
