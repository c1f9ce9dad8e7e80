"""Oracles shared by the tests: a 2-D Gaussian mixture with its exact denoiser, and a fixed eps-network."""

from __future__ import annotations

import torch
from torch import nn

from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.toy import three_gaussians

MIX = three_gaussians()  # the exact-denoiser oracle (difflab.diffusion.toy)
MU, S, W = MIX.mu, MIX.s, MIX.w
mixture_denoiser = MIX.denoiser


def assert_recovers_mixture(x: torch.Tensor, mean_tol: float = 0.1, cov_rtol: float = 0.08) -> None:
    """Samples [n, 2] have the mixture's mean, covariance and weights (nearest-mean assignment)."""
    mean, cov = MIX.moments()
    xd = x.double()
    assert torch.allclose(xd.mean(0), mean, atol=mean_tol), (xd.mean(0), mean)
    assert torch.allclose(torch.cov(xd.T), cov, atol=0.15, rtol=cov_rtol), (torch.cov(xd.T), cov)
    weights = MIX.component_fractions(xd)
    assert torch.allclose(weights, W, atol=0.04), weights


SCHED = DiscreteVPScheduler(grid="karras")


class ToyEpsNet(nn.Module):
    """A fixed nonlinear eps-model eps(x_t, t): the same function drives difflab and diffusers."""

    def forward(self, x_in, c_noise, cond=None):
        t = c_noise.reshape(-1, 1, 1, 1) / 1000.0
        return torch.tanh(x_in) * (0.5 + 0.4 * t) + 0.1 * t
