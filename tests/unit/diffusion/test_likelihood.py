"""Likelihood through the probability-flow ODE against the exact log-density of Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.diffusion.likelihood import bits_per_dim, log_likelihood

SD, D, SIGMA_MIN, SIGMA_MAX = 0.5, 8, 0.01, 80.0


def gaussian_denoiser(x, sigma, cond=None):
    s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return x * SD**2 / (SD**2 + s**2)


def exact_log_p(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, (SD^2 + SIGMA_MIN^2) I): the true density of the data noised to sigma_min."""
    var = SD**2 + SIGMA_MIN**2
    return (-0.5 * (x.double() ** 2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var))


@pytest.fixture(scope="module")
def x():
    return torch.randn(16, D, generator=torch.Generator().manual_seed(0)) * math.sqrt(SD**2 + SIGMA_MIN**2)


def test_exact_trace_recovers_the_gaussian_log_density(x):
    log_p, nfe = log_likelihood(gaussian_denoiser, x, SIGMA_MIN, SIGMA_MAX, math.sqrt(SIGMA_MAX**2 + SD**2),
                                estimator="exact", rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(log_p, exact_log_p(x), atol=1e-3, rtol=0)
    assert nfe > 10


@pytest.mark.parametrize("estimator", ["rademacher", "gaussian"])
def test_hutchinson_estimate_has_its_exact_error(x, estimator):
    """For this linear denoiser J = (1 - k(sigma)) I, so one fixed probe eps gives exactly
    log p + C (||eps||^2 - d) with C = integral of (1 - k) d(log sigma) = 0.5 log((SD^2 + s_max^2) / (SD^2 + s_min^2)).
    Rademacher probes have ||eps||^2 = d: exact."""
    log_p, _ = log_likelihood(gaussian_denoiser, x, SIGMA_MIN, SIGMA_MAX, math.sqrt(SIGMA_MAX**2 + SD**2),
                              estimator=estimator, generator=torch.Generator().manual_seed(3), rtol=1e-7, atol=1e-7)
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    norm2 = (probe.sign() ** 2 if estimator == "rademacher" else probe**2).double().sum(1)
    c = 0.5 * math.log((SD**2 + SIGMA_MAX**2) / (SD**2 + SIGMA_MIN**2))
    torch.testing.assert_close(log_p, exact_log_p(x) + c * (norm2 - D), atol=2e-3, rtol=0)


def test_bits_per_dim_of_uniform_data_is_eight():
    """Uniform density on [-1, 1]^d (log p = -d log 2) is 8 bits/dim for 8-bit data."""
    d = 3 * 32 * 32
    assert bits_per_dim(torch.tensor([-d * math.log(2.0)]), d).item() == pytest.approx(8.0)


def test_bad_estimator_is_clear(x):
    with pytest.raises(ValueError, match="unknown trace estimator"):
        log_likelihood(gaussian_denoiser, x, SIGMA_MIN, SIGMA_MAX, SIGMA_MAX, estimator="skilling")


def test_bits_per_dim_of_the_gaussian_is_its_entropy():
    """E[-log p] is the differential entropy 0.5 d log(2 pi e var): bpd = that / (d ln 2) + 7 for 8-bit data."""
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1)) * math.sqrt(SD**2 + SIGMA_MIN**2)
    log_p, _ = log_likelihood(gaussian_denoiser, x, SIGMA_MIN, SIGMA_MAX, math.sqrt(SIGMA_MAX**2 + SD**2),
                              estimator="exact", rtol=1e-7, atol=1e-7)
    bpd = bits_per_dim(log_p, D).mean().item()
    entropy_bpd = 0.5 * math.log(2 * math.pi * math.e * (SD**2 + SIGMA_MIN**2)) / math.log(2) + 7
    assert bpd == pytest.approx(bits_per_dim(exact_log_p(x), D).mean().item(), abs=1e-4)
    se = math.sqrt(D / 2) / (D * math.log(2)) / math.sqrt(len(x))  # sd of -log p is sqrt(d/2) nats per sample
    assert abs(bpd - entropy_bpd) < 4 * se
