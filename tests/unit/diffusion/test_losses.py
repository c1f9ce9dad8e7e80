"""The training loss against closed forms: Gaussian data has an exact denoiser and a known irreducible loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from difflab.diffusion import Denoiser, DiffusionLoss, DiscreteVPScheduler

SD = 0.5


class ExactNet(nn.Module):
    """Outputs the F that makes D the exact denoiser of N(0, SD^2) data, for any prediction target."""

    def __init__(self, scheduler: DiscreteVPScheduler):
        super().__init__()
        self.scheduler = scheduler

    def forward(self, x_in, c_noise, cond=None):
        sigma = self.scheduler.t_to_sigma(c_noise.double())
        c_skip, c_out, c_in, _ = self.scheduler.scalings(sigma)
        shape = (-1, 1, 1, 1)
        x = x_in.double() / c_in.reshape(shape)
        d = x * SD**2 / (SD**2 + sigma.reshape(shape) ** 2)
        return ((d - c_skip.reshape(shape) * x) / c_out.reshape(shape)).float()


def irreducible(prediction: str, sigma: torch.Tensor) -> torch.Tensor:
    """Var[target | x] for x0 ~ N(0, SD^2): derived per target, independently of precond.py."""
    post = SD**2 * sigma**2 / (SD**2 + sigma**2)  # Var[x0 | x]
    if prediction == "x0":
        return post
    if prediction == "eps":  # eps = (x - x0) / sigma
        return post / sigma**2
    # v = alpha (eps - sigma x0) = alpha (x / sigma - x0 (1 + sigma^2) / sigma)
    return post * (1 + sigma**2) / sigma**2


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["simple", "min_snr"])
def test_loss_of_exact_denoiser_is_the_irreducible_variance(prediction, weighting):
    s = DiscreteVPScheduler(prediction=prediction)
    loss_fn = DiffusionLoss(weighting, min_snr_gamma=5.0)
    sig = s.sigmas
    snr = sig.pow(-2)
    paper_weight = {  # Hang et al. 2023: min(snr, gamma) over the target's own snr weighting
        "eps": snr.clamp(max=5.0) / snr, "x0": snr.clamp(max=5.0), "v": snr.clamp(max=5.0) / (snr + 1),
    }[prediction]
    w = torch.ones_like(sig) if weighting == "simple" else paper_weight
    expected = (w * irreducible(prediction, sig)).mean().item()  # t uniform over the 1000 steps

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 1, 2, 2, generator=g) * SD
    losses = loss_fn(Denoiser(ExactNet(s), s), x0, generator=g)
    assert losses.shape == (20000,)
    assert losses.mean().item() == pytest.approx(expected, rel=0.05)


def test_loss_is_zero_for_a_point_mass_with_the_exact_denoiser():
    class ConstNet(nn.Module):  # D = 0.3 everywhere, via the x0 target
        def forward(self, x_in, c_noise, cond=None):
            return torch.full_like(x_in, 0.3)

    s = DiscreteVPScheduler(prediction="x0")
    x0 = torch.full((16, 1, 4, 4), 0.3)
    assert torch.allclose(DiffusionLoss()(Denoiser(ConstNet(), s), x0), torch.zeros(16), atol=1e-12)


def test_unknown_weighting_is_clear():
    with pytest.raises(ValueError, match="unknown loss weighting"):
        DiffusionLoss("p2")
