"""The web UI's schedule types as grids (`diffusion/sigma_grids.py`, `schedules.py`) against their references:
diffusers' Align Your Steps levels and beta sigmas, k-diffusion's discrete schedule and exponential grids, and the
web UI's formulas for SGM uniform and simple."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF
from difflab.diffusion import DiscreteVPScheduler, EDMScheduler, FlowScheduler
from difflab.diffusion.schedules import GRIDS
from difflab.errors import ConfigError
from difflab.samplers import SamplerSpec
from references import k_diffusion

SCHEDULERS = {p.stem: instantiate(OmegaConf.load(p)) for p in sorted(Path(CONF, "scheduler").glob("*.yaml"))}
SD15 = DiscreteVPScheduler(betas="scaled_linear", beta_start=0.00085, beta_end=0.012)  # Stable Diffusion's schedule


@pytest.mark.parametrize("grid,key", [("ays", "StableDiffusionSigmas"), ("ays_sdxl", "StableDiffusionXLSigmas")])
def test_align_your_steps_is_the_published_schedule_at_10_steps(grid, key):
    pytest.importorskip("diffusers", reason="diffusers (dev extra) holds the published AYS levels")
    from diffusers.schedulers import AysSchedules

    want = torch.tensor(AysSchedules[key], dtype=torch.float64)
    for scheduler in (SD15, *SCHEDULERS.values()):
        torch.testing.assert_close(scheduler.with_grid(grid).inference_sigmas(10), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("grid", ["ays", "ays_sdxl"])
def test_align_your_steps_interpolates_in_log_sigma_for_other_step_counts(grid):
    """20 steps: 21 points uniform in the index of the 11 published levels, so the even ones are the published levels
    (the last, sigma_min, replaced by 0) and the odd ones their geometric means (log-linear midpoints)."""
    ten = SD15.with_grid(grid).inference_sigmas(10)
    twenty = SD15.with_grid(grid).inference_sigmas(20)
    torch.testing.assert_close(twenty[0:20:2], ten[:10], rtol=1e-12, atol=0)
    published = torch.cat([ten[:10], torch.tensor([0.029], dtype=torch.float64)])
    torch.testing.assert_close(twenty[1:20:2], (published[:-1] * published[1:]).sqrt(), rtol=1e-12, atol=0)
    five = SD15.with_grid(grid).inference_sigmas(5)  # 6 points: every other published level
    torch.testing.assert_close(five[:5], ten[0:10:2], rtol=1e-12, atol=0)


def test_align_your_steps_outside_a_schedulers_range_is_a_config_error():
    with pytest.raises(ConfigError, match="`sampler.grid`: ays's published levels 14.615 .. 0.029 leave"):
        EDMScheduler(sigma_max=10.0).with_grid("ays")
    with pytest.raises(ConfigError, match="`sampler.grid`"):
        SamplerSpec("euler", steps=4, grid="Align Your Steps").sigmas(EDMScheduler(sigma_min=0.05))


@pytest.mark.parametrize("steps", [1, 7, 20])
def test_sgm_uniform_is_the_web_uis_formula_on_k_diffusions_discrete_schedule(steps):
    """The web UI's sgm_uniform: t_to_sigma(linspace(sigma_to_t(sigma_max), sigma_to_t(sigma_min), n + 1)[:-1]), 0,
    with k-diffusion's DiscreteSchedule (log-linear interpolation of the 1,000 training sigmas)."""
    K = k_diffusion()
    for scheduler in (DiscreteVPScheduler(), SD15):
        model = K.external.DiscreteSchedule(scheduler.sigmas.float(), quantize=False)
        start = model.sigma_to_t(torch.tensor(scheduler.sigma_max))
        end = model.sigma_to_t(torch.tensor(scheduler.sigma_min))
        want = [float(model.t_to_sigma(t)) for t in torch.linspace(float(start), float(end), steps + 1)[:-1]] + [0.0]
        got = scheduler.with_grid("sgm_uniform").inference_sigmas(steps)
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=0)


def test_sgm_uniform_is_uniform_in_each_continuous_schedulers_time():
    """EDM's time ln(sigma) / 4 makes it geometric; flow matching's 1000 t uniform in t = sigma / (1 + sigma)."""
    edm = EDMScheduler().with_grid("sgm_uniform").inference_sigmas(8)
    want = torch.linspace(math.log(80.0), math.log(0.002), 9, dtype=torch.float64)[:-1].exp()
    torch.testing.assert_close(edm[:-1], want, rtol=1e-12, atol=0)
    flow = FlowScheduler()
    t = flow.t_of_sigma(flow.with_grid("sgm_uniform").inference_sigmas(8)[:-1])
    torch.testing.assert_close(t, torch.linspace(0.999, 0.001, 9, dtype=torch.float64)[:-1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 7, 20, 30])
def test_simple_is_the_web_uis_formula_on_the_training_sigmas(steps):
    """The web UI's simple_scheduler: sigmas[-(1 + int(x * T / n))] for x < n, then 0, on k-diffusion's table."""
    K = k_diffusion()
    scheduler = DiscreteVPScheduler()
    table = K.external.DiscreteSchedule(scheduler.sigmas, quantize=False).sigmas
    ss = len(table) / steps
    want = torch.tensor([float(table[-(1 + int(x * ss))]) for x in range(steps)] + [0.0], dtype=torch.float64)
    torch.testing.assert_close(scheduler.with_grid("simple").inference_sigmas(steps), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("steps", [2, 10, 25])
def test_beta_matches_diffusers_beta_sigmas(steps):
    diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")
    ref = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                           beta_end=0.02, use_beta_sigmas=True, timestep_spacing="linspace")
    ref.set_timesteps(steps)
    got = DiscreteVPScheduler().with_grid("beta").inference_sigmas(steps)
    torch.testing.assert_close(got.float(), ref.sigmas, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", ["Exponential", "Polyexponential", "exponential", "polyexponential"])
def test_exponential_and_polyexponential_are_k_diffusions_grids(name):
    """Both are difflab's logsnr grid: k-diffusion's get_sigmas_exponential, and get_sigmas_polyexponential at the
    web UI's default rho = 1."""
    K = k_diffusion().sampling
    scheduler = EDMScheduler()
    spec = SamplerSpec("euler", steps=12, grid=name)
    assert spec.grid == "logsnr"
    ref = (K.get_sigmas_polyexponential(12, 0.002, 80.0, rho=1.0) if name.lower().startswith("poly")
           else K.get_sigmas_exponential(12, 0.002, 80.0))
    torch.testing.assert_close(spec.sigmas(scheduler).float(), ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("key", sorted(SCHEDULERS))
def test_every_grid_of_every_scheduler_descends_inside_its_range_to_zero(key):
    scheduler = SCHEDULERS[key]
    for grid in getattr(type(scheduler), "grids", GRIDS):
        if grid == "optimized":
            continue
        for steps in (1, 2, 10, 33):
            sigmas = scheduler.with_grid(grid).inference_sigmas(steps)
            positive = sigmas[:-1]
            assert len(sigmas) == steps + 1 and sigmas[-1] == 0, (grid, steps, sigmas)
            assert bool((positive[1:] < positive[:-1]).all()), (grid, steps, sigmas)
            assert scheduler.sigma_min * (1 - 1e-9) <= float(positive.min()), (grid, steps)
            assert float(positive.max()) <= scheduler.sigma_max * (1 + 1e-9), (grid, steps)


def test_simple_is_a_discrete_spacing_and_the_web_uis_trailing_when_steps_divide_the_table():
    scheduler = DiscreteVPScheduler()
    torch.testing.assert_close(scheduler.with_grid("simple").inference_sigmas(20),
                               scheduler.with_grid("trailing").inference_sigmas(20), rtol=0, atol=0)
    assert not torch.equal(scheduler.with_grid("simple").inference_sigmas(30),
                           scheduler.with_grid("trailing").inference_sigmas(30))  # floor vs round of 1000 / 30
    with pytest.raises(ConfigError, match="`sampler.grid`: unknown sigma grid 'simple' for EDMScheduler"):
        EDMScheduler().with_grid("simple")
    assert np.isclose(float(scheduler.with_grid("beta").inference_sigmas(3)[1]),
                      scheduler.sigma_min + 0.5 * (scheduler.sigma_max - scheduler.sigma_min))  # Beta(0.6, 0.6) median
