"""Toy data with an exact denoiser: isotropic Gaussian mixtures (the oracle of the sampler tests and tutorials).

For x0 ~ sum_k w_k N(mu_k, s_k^2 I) in d dimensions, the noisy marginal at noise level sigma is
sum_k w_k N(mu_k, (s_k^2 + sigma^2) I), and the ideal denoiser (Tweedie / the posterior mean) is

    D(x, sigma) = E[x0 | x] = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))

with responsibilities r_k(x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I). Sampling with D has
no training error, so whatever error remains belongs to the sampler and its noise-level grid.

Notation: mu [K, d] component means, s [K] component stds, w [K] weights; x [B, d], sigma [B].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.denoiser import DenoiseFn


def make_mixture_denoiser(mu: Tensor, s: Tensor, w: Tensor) -> DenoiseFn:
    """Exact E[x0 | x] for x0 ~ sum_k w_k N(mu_k, s_k^2 I); x is [B, d], sigma [B]; float64 inside, float32 out."""
    mu, s, w = mu.double(), s.double(), w.double()

    def denoise(x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        xd, sd = x.double(), sigma.double().reshape(-1, 1)  # (B, d), (B, 1)
        var = s[None] ** 2 + sd**2  # (B, K)
        sq = ((xd[:, None, :] - mu[None]) ** 2).sum(-1)  # (B, K)
        logp = w.log()[None] - sq / (2 * var) - 0.5 * mu.shape[1] * var.log()  # isotropic Gaussian log-density
        r = torch.softmax(logp, dim=1)  # (B, K) responsibilities
        post = mu[None] + (s[None] ** 2 / var)[..., None] * (xd[:, None, :] - mu[None])  # (B, K, d) posterior means
        return (r[..., None] * post).sum(1).float()

    return denoise


@dataclass(frozen=True)
class GaussianMixture:
    """An isotropic Gaussian mixture with its exact denoiser, moments, exact samples and error measures."""

    mu: Tensor  # (K, d)
    s: Tensor  # (K,)
    w: Tensor  # (K,), sums to 1

    def __post_init__(self) -> None:
        k = self.mu.shape[0]
        if self.mu.ndim != 2 or self.s.shape != (k,) or self.w.shape != (k,):
            raise ValueError(f"need mu [K, d], s [K], w [K]; got {tuple(self.mu.shape)}, {tuple(self.s.shape)}, "
                             f"{tuple(self.w.shape)}")
        if not math.isclose(float(self.w.sum()), 1.0, abs_tol=1e-6) or bool((self.w <= 0).any()):
            raise ValueError(f"mixture weights must be positive and sum to 1, got {self.w.tolist()}")

    @property
    def dim(self) -> int:
        return int(self.mu.shape[1])

    @property
    def denoiser(self) -> DenoiseFn:
        """D(x, sigma, cond=None) -> E[x0 | x], the ideal denoiser of this mixture."""
        return make_mixture_denoiser(self.mu, self.s, self.w)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact mean [d] and covariance [d, d] (float64)."""
        mu, s, w = self.mu.double(), self.s.double(), self.w.double()
        mean = (w[:, None] * mu).sum(0)
        eye = torch.eye(self.dim, dtype=torch.float64)
        second = (w[:, None, None] * (mu[:, :, None] * mu[:, None, :] + s[:, None, None] ** 2 * eye)).sum(0)
        return mean, second - mean[:, None] * mean[None]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples [n, d] (float64)."""
        k = torch.multinomial(self.w.double(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mu.double()[k] + self.s.double()[k, None] * z

    def component_fractions(self, x: Tensor) -> Tensor:
        """Fraction of samples nearest each mean ([K]): how samples split between the modes."""
        nearest = torch.cdist(x.double(), self.mu.double()).argmin(1)
        return torch.bincount(nearest, minlength=len(self.w)).double() / len(x)

    def weight_error(self, x: Tensor) -> float:
        """L1 distance between `component_fractions(x)` and the weights w."""
        return float((self.component_fractions(x) - self.w.double()).abs().sum())

    def w2_gaussian(self, x: Tensor) -> float:
        """2-Wasserstein distance between the Gaussian fit of samples x [n, d] and the mixture's exact moments.

        W2^2 = ||m1 - m2||^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2); nan for non-finite samples.
        """
        xd = x.double()
        if not torch.isfinite(xd).all():
            return float("nan")
        return w2_between_fits(xd, *self.moments())


def w2_between_fits(x: Tensor, m2: Tensor, c2: Tensor) -> float:
    """W2 between the Gaussian fit of samples x [n, d] and N(m2 [d], c2 [d, d]) (formula above; float64)."""
    xd = x.double()
    d = xd.shape[1]
    m1, c1 = xd.mean(0), torch.cov(xd.T).reshape(d, d)
    c2_half = _psd_sqrt(c2)
    cross = _psd_sqrt(c2_half @ c1 @ c2_half)
    w2_sq = float(((m1 - m2) ** 2).sum() + torch.trace(c1 + c2 - 2 * cross))
    return math.sqrt(max(w2_sq, 0.0))


def _psd_sqrt(a: Tensor) -> Tensor:
    """Symmetric square root of a positive semi-definite matrix (eigendecomposition, float64)."""
    vals, vecs = torch.linalg.eigh((a + a.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def three_gaussians() -> GaussianMixture:
    """The 2-D three-component mixture of the sampler tests and benchmarks (modes of std 0.3 / 0.5 / 0.2)."""
    return GaussianMixture(
        mu=torch.tensor([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], dtype=torch.float64),
        s=torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
        w=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    )
