"""VP and sub-VP SDE schedulers: time <-> sigma maps, the papers' perturbation kernels, and sampling."""

from __future__ import annotations

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler, SubVPSDEScheduler, VPSDEScheduler
from difflab.samplers import SamplerSpec, generate
from oracles import assert_recovers_mixture, mixture_denoiser

T = torch.linspace(1e-3, 1.0, 50, dtype=torch.float64)


@pytest.mark.parametrize("cls", [VPSDEScheduler, SubVPSDEScheduler])
def test_time_and_sigma_invert_each_other(cls):
    s = cls()
    sig = s.sigma_of_t(T)
    assert torch.all(sig[1:] > sig[:-1])
    t_back = s.t_of_sigma(sig) if cls is VPSDEScheduler else s.t_of_neg_log_abar(-2 * s.sqrt_abar(sig).log())
    torch.testing.assert_close(t_back, T, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.scalings(sig).c_noise, 999 * T, rtol=1e-9, atol=1e-9)


def test_vp_sde_is_the_continuous_limit_of_ddpm():
    """Song et al. App. B: DDPM's betas 1e-4..0.02 over 1000 steps become beta(t) = 0.1 + 19.9 t, so
    -log abar(t) = integral of beta equals the sum of DDPM's betas (to O(1/N)); abar = prod(1 - beta) itself
    differs from exp(-sum beta) at second order (sum beta^2 / 2 = 0.067 at t = 1)."""
    disc, cont = DiscreteVPScheduler(), VPSDEScheduler()
    idx = torch.arange(99, 1000, 100)
    t = (idx + 1).double() / 1000
    summed = torch.cumsum(disc.betas, 0)[idx]
    rel = (cont.neg_log_abar(t) - summed).abs() / summed
    assert rel.max() < 0.011, rel
    assert ((cont.sigma_of_t(t) - disc.sigmas[idx]).abs() / disc.sigmas[idx]).max() < 0.04


def test_perturbation_kernels_match_the_paper():
    """The network input c_in * (x0 + sigma eps) must be the SDE's x_t."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    for cls in (VPSDEScheduler, SubVPSDEScheduler):
        s = cls()
        L = s.neg_log_abar(T)
        abar = (-L).exp()
        sig = s.sigma_of_t(T)
        x_t = s.scalings(sig).c_in * (x0 + sig * eps)
        std = (1 - abar).sqrt() if cls is VPSDEScheduler else (1 - abar)
        torch.testing.assert_close(x_t, abar.sqrt() * x0 + std * eps)
        sc = s.scalings(sig)  # eps prediction: the true eps gives the exact denoiser
        torch.testing.assert_close(sc.c_skip * (x0 + sig * eps) + sc.c_out * eps, x0)


@pytest.mark.parametrize("cls,grid", [(VPSDEScheduler, "uniform"), (VPSDEScheduler, "karras"),
                                      (SubVPSDEScheduler, "uniform")])
@pytest.mark.parametrize("sampler,steps", [("heun", 40), ("dpmpp_2m", 40), ("euler_maruyama", 300)])
def test_samplers_recover_the_mixture_under_sde_schedules(cls, grid, sampler, steps):
    x, _ = generate(mixture_denoiser, cls(grid=grid), SamplerSpec(sampler, steps=steps), n=2000, shape=(2,),
                    seed=0, batch_size=2000)
    assert_recovers_mixture(x, cov_rtol=0.1)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDEScheduler(beta_min=20.0, beta_max=0.1)
    with pytest.raises(ValueError, match="unknown prediction"):
        VPSDEScheduler(prediction="score")
    with pytest.raises(ValueError, match="unknown sigma grid"):
        SubVPSDEScheduler(grid="leading")
