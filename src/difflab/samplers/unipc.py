"""UniPC: unified predictor-corrector multistep solver (UniP-p predictor, UniC-p corrector), data prediction.

Paper: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models", Algorithm 2 (UniC), Algorithm 3 (UniP), eqs. (5)-(8), B(h) choices of Sec. 3.3 / App. C.

Notation (sigma view, x = x0 + sigma * eps, lambda = -log sigma; each update is the VP one divided by alpha_t):
    s0, t        current and next noise level; h = lambda_t - lambda_s0, hh = -h (data prediction)
    m0, m_k      D at s0 and at the k-th previous grid point; D1_k = (m_k - m0) / r_k,  r_k = (lambda_k - lambda_s0) / h
    phi          h phi_1 = e^{hh} - 1;  phi_{k+1}(hh) = (phi_k(hh) - 1/k!) / hh                    eq. (5)
    B(h)         bh1: hh;  bh2: e^{hh} - 1                                                        Sec. 3.3
    R, b         R_{ij} = r_j^{i-1},  b_i = phi_{i+1}(hh) i! / B(h)   (a p x p Vandermonde system)     eq. (7)
    UniP-p       x_t = (s_t/s0) x - phi m0 - B(h) sum_k rho^p_k D1_k,   R[:-1,:-1] rho^p = b[:-1]  (p = 2: rho = 1/2)
    UniC-p       x_t^c = (s_t/s0) x - phi m0 - B(h) (sum_k rho^c_k D1_k + rho^c_p (m_t - m0)),  R rho^c = b
                 (p = 1: rho^c = 1/2), where m_t = D(x_t, t) is the evaluation the next step uses anyway.
The corrector adds no evaluation: m_t (taken at the predicted x_t) is also the next step's m0, and the last
step to sigma = 0 returns m0. `lower_order_final` lowers the order near the end (p <= steps left), as diffusers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import DenoiseFn, Generator, StepCallback, register, sigma_batch

VARIANTS = ("bh1", "bh2")


def _coefficients(lams: list[Tensor], lam_s0: Tensor, lam_t: Tensor, p: int, variant: str
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """(h phi_1, B(h), R [p, p], b [p], r_k for k = 1..p-1) of eqs. (5)-(7); lams are the previous points, newest last."""
    h = lam_t - lam_s0
    hh = -h
    h_phi_1 = torch.expm1(hh)
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rks = [(lams[-k] - lam_s0) / h for k in range(1, p)] + [torch.ones((), dtype=h.dtype)]
    rows, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for i in range(1, p + 1):
        rows.append(torch.stack(rks) ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, torch.stack(rows), torch.stack(b), rks[:-1]


def _update(x: Tensor, ms: list[Tensor], lams: list[Tensor], sigma_s0: Tensor, sigma_t: Tensor, p: int, variant: str,
            m_t: Tensor | None) -> Tensor:
    """UniP-p (m_t None) or UniC-p (with m_t = D(x_t, t)) from s0 to t; ms/lams end with the point s0."""
    lam_s0, lam_t = lams[-1], -sigma_t.log()
    h_phi_1, b_h, R, b, rks = _coefficients(lams[:-1], lam_s0, lam_t, p, variant)
    m0 = ms[-1]
    d1s = [(ms[-1 - k] - m0) / rks[k - 1].float() for k in range(1, p)]
    x_t = (sigma_t / sigma_s0).float() * x - h_phi_1.float() * m0
    if m_t is None:  # UniP-p
        if not d1s:
            return x_t
        rhos = torch.tensor([0.5], dtype=R.dtype) if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        res = sum(r.float() * d for r, d in zip(rhos, d1s))
    else:  # UniC-p
        rhos = torch.tensor([0.5], dtype=R.dtype) if p == 1 else torch.linalg.solve(R, b)
        res = sum((r.float() * d for r, d in zip(rhos[:-1], d1s)), torch.zeros_like(m0)) + rhos[-1].float() * (m_t - m0)
    return x_t - b_h.float() * res


@register("unipc", order=3)
@torch.no_grad()
def sample_unipc(
    denoise_fn: DenoiseFn, x: Tensor, sigmas: Tensor, *, cond: object = None, generator: Generator = None,
    callback: StepCallback | None = None, order: int = 3, variant: str = "bh2", corrector: bool = True,
    lower_order_final: bool = True,
) -> Tensor:
    """UniPC (Zhao et al. 2023): UniP-`order` predictor with the UniC corrector, one evaluation per step.

    `order` 1-3 (`order` 3's convergence order is 3 with the corrector, 4 at best in theory); `variant` bh1 or
    bh2 (B(h) of Sec. 3.3); `corrector=False` gives UniP alone.
    """
    if order not in (1, 2, 3) or variant not in VARIANTS:
        raise ValueError(f"UniPC needs order in (1, 2, 3) and variant in {VARIANTS}, got {order}, {variant!r}")
    n = len(sigmas) - 1
    ms: list[Tensor] = []
    lams: list[Tensor] = []
    x_last, p_last = x, 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, sigma_batch(sigma, x), cond)
        if corrector and i > 0:  # Algorithm 2: correct x_i with the evaluation at the predicted x_i
            x = _update(x_last, ms, lams, sigmas[i - 1], sigma, p_last, variant, x0)
        ms, lams = (ms + [x0])[-order:], (lams + [-sigma.log()])[-order:]
        p = min(order, len(ms), n - i) if lower_order_final else min(order, len(ms))
        x_last, p_last = x, p
        x = x0 if sigma_next == 0 else _update(x, ms, lams, sigma, sigma_next, p, variant, None)  # Algorithm 3
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0})
    return x


