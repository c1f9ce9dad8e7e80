"""EDM and VE SDE schedulers against EDM Table 1, Song et al. 2021, and Gaussian-data oracles."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from difflab.diffusion import (
    Denoiser,
    DiffusionLoss,
    EDMScheduler,
    Scheduler,
    VEScheduler,
)
from difflab.nets import UNet
from difflab.samplers import SamplerSpec

# (sigma, c_skip, c_out, c_in, c_noise) for sigma_data = 0.5, by hand: sigma^2 + 0.25 is a perfect square.
EDM_GOLDEN = [
    (0.5, 0.5, 0.25 / math.sqrt(0.5), math.sqrt(2.0), math.log(0.5) / 4),  # sqrt(0.5)
    (0.375, 0.64, 0.3, 1.6, math.log(0.375) / 4),  # sqrt(0.390625) = 0.625
    (1.2, 0.25 / 1.69, 0.6 / 1.3, 1 / 1.3, math.log(1.2) / 4),  # sqrt(1.69) = 1.3
    (math.exp(4.0), 0.25 / (math.exp(8.0) + 0.25), 0.5 * math.exp(4.0) / math.sqrt(math.exp(8.0) + 0.25),
     1 / math.sqrt(math.exp(8.0) + 0.25), 1.0),
]


def test_edm_scalings_match_table_1():
    sched = EDMScheduler()
    sigma = torch.tensor([row[0] for row in EDM_GOLDEN], dtype=torch.float64)
    got = torch.stack(list(sched.scalings(sigma)), dim=1)  # (4, 4)
    expected = torch.tensor([row[1:] for row in EDM_GOLDEN], dtype=torch.float64)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)


def test_ve_scalings_match_table_1():
    sigma = torch.tensor([2.0, 2 * math.e, 0.02], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = VEScheduler().scalings(sigma)
    assert torch.equal(c_skip, torch.ones(3, dtype=torch.float64)) and torch.equal(c_in, c_skip)
    assert torch.equal(c_out, sigma)
    assert torch.allclose(c_noise, torch.tensor([0.0, 1.0, math.log(0.01)], dtype=torch.float64), atol=1e-15)


def test_ve_input_scaling_option_changes_c_in_alone():
    sigma = torch.tensor([0.0, 1.2, 50.0], dtype=torch.float64)
    plain, scaled = VEScheduler().scalings(sigma), VEScheduler(scale_input=True, sigma_data=0.5).scalings(sigma)
    assert torch.allclose(scaled.c_in, torch.tensor([2.0, 1 / 1.3, 1 / math.sqrt(2500.25)], dtype=torch.float64))
    for name in ("c_skip", "c_out", "c_noise"):
        assert torch.equal(getattr(plain, name), getattr(scaled, name)), name


@pytest.mark.parametrize("sched", [EDMScheduler(), VEScheduler()], ids=["edm", "ve"])
def test_true_target_makes_an_exact_denoiser(sched: Scheduler):
    """With F = (x0 - c_skip x) / c_out, D = c_skip x + c_out F is x0; VE's F is -eps (NCSN sigma * score)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, generator=g, dtype=torch.float64) * 0.5
    eps = torch.randn(64, generator=g, dtype=torch.float64)
    sigma = torch.logspace(-2.5, 1.9, 64, dtype=torch.float64)
    x = x0 + sigma * eps
    c_skip, c_out, _, _ = sched.scalings(sigma)
    target = (x0 - c_skip * x) / c_out
    assert torch.allclose(c_skip * x + c_out * target, x0, atol=1e-10)
    if isinstance(sched, VEScheduler):
        assert torch.allclose(target, -eps, atol=1e-10)


def test_edm_input_has_unit_variance_for_data_of_std_sigma_data():
    g = torch.Generator().manual_seed(1)
    sched = EDMScheduler()
    for sigma in (0.01, 1.0, 50.0):
        x = torch.randn(100_000, generator=g, dtype=torch.float64) * (0.5**2 + sigma**2) ** 0.5
        c_in = sched.scalings(torch.tensor(sigma, dtype=torch.float64)).c_in
        assert (c_in * x).std().item() == pytest.approx(1.0, rel=0.02)


def test_edm_training_log_sigma_is_normal():
    sched = EDMScheduler(p_mean=-1.2, p_std=1.2)
    sigma = sched.sample_training_sigma(200_000, generator=torch.Generator().manual_seed(0))
    assert sigma.dtype == torch.float64 and sigma.shape == (200_000,)
    log_sigma = sigma.log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, rel=0.01)


def test_ve_training_sigma_is_log_uniform_on_its_range():
    sched = VEScheduler(sigma_min=0.01, sigma_max=50.0, eps_t=1e-5)
    sigma = sched.sample_training_sigma(200_000, generator=torch.Generator().manual_seed(0))
    lo = 0.01 * 5000.0**1e-5  # sigma(eps_t)
    assert sigma.dtype == torch.float64 and sigma.min().item() >= lo and sigma.max().item() <= 50.0
    t = (sigma / 0.01).log() / math.log(5000.0)  # sigma(t) inverted: uniform on [eps_t, 1]
    counts = torch.histc(t, bins=10, min=0.0, max=1.0)
    assert torch.allclose(counts / 20_000, torch.ones(10, dtype=torch.float64), rtol=0.03)
    assert torch.allclose(sched.sigma_of_t(t), sigma, rtol=1e-12)


@pytest.mark.parametrize("sched", [EDMScheduler(), VEScheduler(), VEScheduler(grid="karras")],
                         ids=["edm", "ve-geometric", "ve-karras"])
def test_inference_grids_start_at_sigma_max_descend_and_end_at_zero(sched: Scheduler):
    for steps in (1, 2, 18):
        sig = sched.inference_sigmas(steps)
        assert sig.shape == (steps + 1,) and sig.dtype == torch.float64
        assert sig[0].item() == pytest.approx(sched.sigma_max, rel=1e-12) and sig[-1] == 0
        assert torch.all(sig[:-1] > sig[1:])
        if steps > 1:
            assert sig[-2].item() == pytest.approx(sched.sigma_min, rel=1e-12)


def test_ve_geometric_grid_has_a_constant_ratio():
    sig = VEScheduler(sigma_min=0.01, sigma_max=50.0).inference_sigmas(11)[:-1]
    ratios = sig[1:] / sig[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, (0.01 / 50.0) ** 0.1), rtol=1e-12)


def test_bad_options_are_clear():
    for grid in ("leading", "trailing", "linspace", "geometric"):
        with pytest.raises(ValueError, match="unknown sigma grid"):
            EDMScheduler(grid=grid)
    with pytest.raises(ValueError, match="unknown sigma grid"):
        VEScheduler(grid="cubic")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VEScheduler(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sampler.steps"):  # no training grid to default to
        SamplerSpec("ddpm", steps=None).sigmas(EDMScheduler())


SD = 1.0  # data std, deliberately != sigma_data so that the EDM loss is not identically 1


def sigma_of_c_noise(sched: Scheduler, c_noise: torch.Tensor) -> torch.Tensor:
    """Invert c_noise (ln(sigma)/4 for EDM, ln(sigma/2) for VE) -- independently of precond.py."""
    c = c_noise.double()
    return (4 * c).exp() if isinstance(sched, EDMScheduler) else 2 * c.exp()


class ExactNet(nn.Module):
    """Outputs the F that makes D the exact denoiser of N(0, SD^2) data."""

    def __init__(self, sched: Scheduler, sd: float = SD):
        super().__init__()
        self.sched, self.sd = sched, sd

    def forward(self, x_in, c_noise, cond=None):
        sigma = sigma_of_c_noise(self.sched, c_noise).reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, _ = (t.reshape(-1, 1, 1, 1) for t in self.sched.scalings(sigma.flatten()))
        x = x_in.double() / c_in
        d = x * self.sd**2 / (self.sd**2 + sigma**2)
        return ((d - c_skip * x) / c_out).float()


@pytest.mark.parametrize("weighting", ["simple", "min_snr"])
@pytest.mark.parametrize("sched", [EDMScheduler(), VEScheduler()], ids=["edm", "ve"])
def test_loss_of_exact_denoiser_is_the_irreducible_variance(sched: Scheduler, weighting: str):
    """E[w ||F - F_target||^2] = E_sigma[w Var[x0 | x] / c_out^2] for Gaussian data and the exact denoiser."""
    sigma = sched.sample_training_sigma(400_000, generator=torch.Generator().manual_seed(123))
    post = SD**2 * sigma**2 / (SD**2 + sigma**2)  # Var[x0 | x]
    if isinstance(sched, EDMScheduler):  # c_out^2 = sigma^2 sd^2 / (sigma^2 + sd^2), EDM Table 1
        c_out2 = sigma**2 * 0.25 / (sigma**2 + 0.25)
    else:  # c_out = sigma, EDM Table 1 VE column
        c_out2 = sigma**2
    w = torch.ones_like(sigma) if weighting == "simple" else sigma.pow(-2).clamp(max=5.0) * c_out2
    expected = (w * post / c_out2).mean().item()

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20_000, 1, 2, 2, generator=g) * SD
    losses = DiffusionLoss(weighting, min_snr_gamma=5.0)(Denoiser(ExactNet(sched), sched), x0, generator=g)
    assert losses.shape == (20_000,) and torch.isfinite(losses).all()
    assert losses.mean().item() == pytest.approx(expected, rel=0.05)


def test_edm_loss_is_one_for_data_of_std_sigma_data():
    """EDM's design target (Sec. 5): with sd = sigma_data the exact denoiser's F-space loss is 1 at every sigma."""
    sched = EDMScheduler(sigma_data=0.5)
    x0 = torch.randn(20_000, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.5
    losses = DiffusionLoss()(Denoiser(ExactNet(sched, sd=0.5), sched), x0, generator=torch.Generator().manual_seed(1))
    assert losses.mean().item() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("sched", [EDMScheduler(), VEScheduler()], ids=["edm", "ve"])
def test_unet_denoiser_trains_with_float_c_noise(sched: Scheduler):
    """c_noise is a float (ln sigma / 4, ln sigma / 2), not a timestep: the UNet denoiser runs and backprops."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(), resolution=8, num_heads=1, norm_groups=4)
    denoiser = Denoiser(net, sched)
    x0 = torch.randn(4, 1, 8, 8) * 0.5
    loss = DiffusionLoss()(denoiser, x0, generator=torch.Generator().manual_seed(0)).mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters() if p.requires_grad)
    sigma = torch.tensor([sched.sigma_min, 1.0, 10.0, sched.sigma_max], dtype=torch.float64)
    out = denoiser(x0 + sigma.reshape(-1, 1, 1, 1).float() * torch.randn_like(x0), sigma)
    assert out.shape == x0.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
