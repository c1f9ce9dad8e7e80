"""The LCM sampler (multistep consistency sampling) with the exact consistency function of the mixture oracle."""

from __future__ import annotations

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler
from difflab.samplers import SAMPLERS, SamplerSpec, generate
from oracles import MIX, assert_recovers_mixture, mixture_denoiser

SCHED = DiscreteVPScheduler(grid="trailing")


def exact_consistency(x, sigma, cond=None):
    """f(x, sigma): the mixture's probability-flow ODE solved from sigma to 0 (UniPC, 30 log-SNR steps), the
    function a perfectly distilled consistency model computes."""
    level = float(sigma[0])
    assert bool((sigma == sigma[0]).all())  # the sampler asks one level per batch
    grid = torch.cat([torch.logspace(torch.log10(torch.tensor(level)), -3, 30, dtype=torch.float64),
                      torch.zeros(1, dtype=torch.float64)])
    return SAMPLERS["unipc"](mixture_denoiser, x, grid)


def test_lcm_is_registered_as_a_consistency_sampler_under_its_web_ui_name():
    info = SAMPLERS["lcm"]
    assert info.consistency and not info.is_deterministic({})
    assert not any(SAMPLERS[k].consistency for k in SAMPLERS if k != "lcm")
    assert SamplerSpec("LCM", steps=2).name == "lcm"


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_lcm_with_the_exact_consistency_function_samples_the_mixture(steps):
    x, nfe = generate(exact_consistency, SCHED, SamplerSpec("lcm", steps=steps), n=2000, shape=(2,), seed=0,
                      batch_size=2000)
    assert nfe == steps
    assert_recovers_mixture(x)


def test_one_lcm_step_is_the_consistency_function_at_sigma_max_and_a_plain_denoiser_is_not_enough():
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(1)) * SCHED.prior_std(SCHED.sigma_max)
    one = SCHED.inference_sigmas(1)
    torch.testing.assert_close(SAMPLERS["lcm"](exact_consistency, z, one), exact_consistency(z, one[:1].expand(500)))
    x = SAMPLERS["lcm"](mixture_denoiser, z, one)  # the posterior mean at sigma_max: all samples near the data mean
    assert float(x.std(0).max()) < 0.1 * float(MIX.moments()[1].diagonal().sqrt().min())
