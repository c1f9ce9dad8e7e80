"""Schedules and preconditioning against the papers' definitions and, where installed, diffusers."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler, karras_sigmas, vp_scalings
from difflab.diffusion.schedules import discrete_timesteps


def test_ddpm_linear_matches_paper_definitions():
    s = DiscreteVPScheduler("linear")
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert len(s.betas) == 1000
    # alpha_bar_T = prod(1 - beta_t): about 4.04e-5 for the DDPM schedule (Ho et al. 2020, Sec. 4)
    alpha_bar_T = torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)).item()
    assert s.alphas_cumprod[-1].item() == pytest.approx(alpha_bar_T, rel=1e-12)
    assert alpha_bar_T == pytest.approx(4.04e-5, rel=0.01)
    # sigma_t = sqrt((1 - a) / a)
    assert s.sigma_max == pytest.approx(math.sqrt((1 - alpha_bar_T) / alpha_bar_T), rel=1e-12)
    assert s.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-9)


def test_cosine_schedule_matches_improved_ddpm():
    s = DiscreteVPScheduler("cosine")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() == pytest.approx(0.999)


def test_sigma_to_t_is_exact_on_table_and_inverts_t_to_sigma():
    s = DiscreteVPScheduler()
    t = torch.tensor([0, 1, 17, 500, 998, 999])
    assert torch.equal(s.sigma_to_t(s.sigmas[t]), t.double())
    frac = torch.tensor([0.25, 10.5, 733.3, 998.9], dtype=torch.float64)
    assert torch.allclose(s.sigma_to_t(s.t_to_sigma(frac)), frac, atol=1e-9)


@pytest.mark.parametrize("spacing,expected", [
    ("leading", [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ("trailing", [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
])
def test_timestep_spacings(spacing, expected):
    assert discrete_timesteps(1000, 10, spacing).tolist() == expected


def test_inference_sigmas_end_at_zero_and_descend():
    for grid in ("leading", "trailing", "linspace", "karras"):
        sig = DiscreteVPScheduler(grid=grid).inference_sigmas(20)
        assert sig.shape == (21,) and sig[-1] == 0 and torch.all(sig[:-1] > sig[1:])
    with pytest.raises(ValueError, match="steps must be in"):
        DiscreteVPScheduler().inference_sigmas(1001)


def test_karras_grid_endpoints():
    sig = karras_sigmas(10, 0.002, 80.0, 7.0)
    assert sig[0].item() == pytest.approx(80.0) and sig[-2].item() == pytest.approx(0.002) and sig[-1] == 0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_scalings_make_the_true_target_an_exact_denoiser(prediction):
    """If F outputs its training target (eps, x0 or v), D = c_skip x + c_out F must equal x0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, generator=g, dtype=torch.float64)
    eps = torch.randn(64, generator=g, dtype=torch.float64)
    sigma = torch.logspace(-2, 2, 64, dtype=torch.float64)
    x = x0 + sigma * eps
    alpha, sigma_vp = (1 + sigma**2).rsqrt(), sigma * (1 + sigma**2).rsqrt()
    target = {"eps": eps, "x0": x0, "v": alpha * eps - sigma_vp * x0}[prediction]
    c_skip, c_out, c_in = vp_scalings(sigma, prediction)
    assert torch.allclose(c_in * x, alpha * x0 + sigma_vp * eps)  # the VP input x_t
    assert torch.allclose(c_skip * x + c_out * target, x0, atol=1e-10)


def test_bad_scheduler_options_are_clear():
    with pytest.raises(ValueError, match="unknown prediction"):
        DiscreteVPScheduler(prediction="score")
    with pytest.raises(ValueError, match="unknown sigma grid"):
        DiscreteVPScheduler(grid="cubic")
    with pytest.raises(ValueError, match="unknown beta schedule"):
        DiscreteVPScheduler(betas="quadratic")


diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")


@pytest.mark.parametrize("betas,diffusers_name,start,end", [
    ("linear", "linear", 1e-4, 0.02), ("cosine", "squaredcos_cap_v2", 1e-4, 0.02),
    ("scaled_linear", "scaled_linear", 0.00085, 0.012),  # Stable Diffusion's schedule
])
def test_schedule_matches_diffusers(betas, diffusers_name, start, end):
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_name, beta_start=start, beta_end=end)
    s = DiscreteVPScheduler(betas, beta_start=start, beta_end=end)
    assert torch.allclose(s.betas.float(), ref.betas, rtol=1e-5, atol=1e-7)
    assert torch.allclose(s.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers(spacing):
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(50)
    assert discrete_timesteps(1000, 50, spacing).tolist() == ref.timesteps.tolist()


def test_steps_offset_matches_stable_diffusion_leading_grid():
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    ref.set_timesteps(30)
    assert discrete_timesteps(1000, 30, "leading", steps_offset=1).tolist() == ref.timesteps.tolist()
    with pytest.raises(ValueError, match="steps_offset"):
        discrete_timesteps(1000, 1000, "leading", steps_offset=1)
