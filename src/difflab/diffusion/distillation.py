"""Distillation targets in the sigma view: consistency distillation, progressive distillation and reflow.

Papers: Song et al. 2023 ("Consistency Models", CM): eqs. (3)-(7), Algorithm 2 (consistency distillation);
Song & Dhariwal 2023 ("Improved Techniques for Training Consistency Models", iCT): Sec. 3.2 (target network
theta^- = stopgrad(theta)), Sec. 3.3 (pseudo-Huber metric); Luo et al. 2023 ("Latent Consistency Models", LCM):
eq. (8)-(9) (skipping-step teacher solver with guidance w distilled in); Salimans & Ho 2022 ("Progressive
Distillation for Fast Sampling of Diffusion Models", PD): Algorithm 2, eq. (9)-(10); Liu et al. 2023 ("Flow
Straight and Fast", rectified flow): Sec. 2.2-2.3 (reflow on the coupling (Z0, Z1) of a trained flow).

Notation (sigma view, x = x0 + sigma * eps, EDM eq. 1):
    D_phi(x, sigma, c)     the teacher's denoiser, guided at w: D(null) + w (D(c) - D(null))  (Ho & Salimans 2022)
    D_theta                the student's denoiser: the same network and preconditioning as the teacher's
    f_theta(x, sigma)      the student's consistency function: D_theta(x, sigma) for sigma > 0 and x at sigma = 0.
                           In the sigma view every preconditioning of precond.py has c_skip(0) = 1, c_out(0) = 0,
                           so D(x, 0) = x is CM eq. (3)'s boundary condition f(x, eps) = x with eps = 0: the student
                           needs no extra (c_skip, c_out) pair (CM eq. 5, LCM eq. 7) and keeps the teacher's network.
    sigma_0 = 0 < sigma_1 < ... < sigma_N    the discretisation; a pair (sigma_n, sigma_{n+1}) is one interval
    Phi(x, sigma -> sigma')  one step of the teacher's probability-flow ODE: Euler (= DDIM, 1 call) or Heun (2 calls)
    d(a, b)                per-example distance: "l2" mean squared error, or "pseudo_huber"
                           sqrt(||a - b||^2 + c^2) - c with c = 0.00054 sqrt(dim)        (iCT Sec. 3.3)

Consistency distillation (CM Algorithm 2, eq. 7), one term per example:
    x_{n+1} = x0 + sigma_{n+1} eps;  x_hat_n = Phi(x_{n+1}, sigma_{n+1} -> sigma_n)        (CM eq. 6)
    L_CD = d(f_theta(x_{n+1}, sigma_{n+1}), f_theta^-(x_hat_n, sigma_n))                  (CM eq. 7, lambda = 1)
Progressive distillation (PD Algorithm 2): two DDIM steps of the teacher sigma -> sigma_mid -> sigma_next give
    x'' and the target x_tilde = (x'' - (sigma_next / sigma) x) / (1 - sigma_next / sigma)   (PD Alg. 2, sigma view)
the x0 for which one DDIM step of the student from sigma lands on x''; the loss is
    L_PD = max(1 / sigma^2, 1) ||D_theta(x, sigma) - x_tilde||^2   ("truncated SNR" weighting, PD eq. 10)
Reflow (Liu et al. Sec. 2.3): the teacher's ODE maps noise z to x_hat0 = ODE(z); the student is trained with the
ordinary denoising loss (losses.py) on x = x_hat0 + sigma z: the same z and x_hat0, not independent draws. A perfect
student has D_theta(x_hat0 + sigma z, sigma) = x_hat0 on the whole path, a straight line, so one Euler/DDIM step from
sigma_max lands on x_hat0. For flow models (x = x_t / (1 - t)) this is exactly Liu et al.'s reflow objective.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.denoiser import DenoiseFn
from difflab.utils.tensors import append_dims

DISTANCES: tuple[str, ...] = ("pseudo_huber", "l2")
SOLVER_ORDERS = {"euler": 1, "heun": 2}  # teacher ODE steps: calls per step = order


def ode_step(denoise_fn: DenoiseFn, x: Tensor, sigma: Tensor, sigma_next: Tensor, cond: Any = None,
             order: int = 1) -> Tensor:
    """One probability-flow ODE step per example from sigma [B] to sigma_next [B] (sigma > sigma_next >= 0).

    order 1: Euler, x + (s' - s) d with d = (x - D) / s (EDM eq. 3), which is DDIM's D + (s' / s)(x - D);
    order 2: Heun (EDM Algorithm 1, lines 5-7), Euler where sigma_next = 0."""
    if order not in (1, 2):
        raise ValueError(f"ODE step order must be 1 (Euler) or 2 (Heun), got {order}")
    s, s_next = append_dims(sigma, x.ndim).float(), append_dims(sigma_next, x.ndim).float()
    d = (x - denoise_fn(x, sigma, cond)) / s  # (B, ...)
    x_next = x + (s_next - s) * d
    if order == 1:
        return x_next
    later = sigma_next > 0  # (B,) Heun's correction where the step does not end at sigma = 0
    if not bool(later.any()):
        return x_next
    rows = later.nonzero().squeeze(1)
    c = None if cond is None else cond[rows]
    d_next = (x_next[rows] - denoise_fn(x_next[rows], sigma_next[rows], c)) / s_next[rows]
    corrected = x[rows] + (s_next[rows] - s[rows]) * 0.5 * (d[rows] + d_next)
    return x_next.index_copy(0, rows, corrected)


def consistency_fn(denoise_fn: DenoiseFn, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
    """f(x, sigma) per example: D(x, sigma) for sigma > 0 and x itself at sigma = 0 (the boundary, CM eq. 3)."""
    out = x.float().clone()
    rows = (sigma > 0).nonzero().squeeze(1)
    if len(rows):
        out[rows] = denoise_fn(x[rows], sigma[rows], None if cond is None else cond[rows]).float()
    return out


def distance(a: Tensor, b: Tensor, kind: str = "pseudo_huber") -> Tensor:
    """d(a, b) per example ([B]): "l2" the mean squared error, "pseudo_huber" sqrt(||a - b||^2 + c^2) - c with
    c = 0.00054 sqrt(dim) (iCT Sec. 3.3)."""
    diff = (a.float() - b.float()).flatten(1)  # (B, dim)
    if kind == "l2":
        return diff.pow(2).mean(1)
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(diff.shape[1])
        return (diff.pow(2).sum(1) + c**2).sqrt() - c
    raise ValueError(f"unknown distance {kind!r}; choose one of {DISTANCES}")


def consistency_loss(student: DenoiseFn, target: DenoiseFn, teacher: DenoiseFn, x0: Tensor, eps: Tensor,
                     sigma: Tensor, sigma_prev: Tensor, cond: Any = None, order: int = 1,
                     kind: str = "pseudo_huber") -> Tensor:
    """CM eq. (7) per example ([B]): d(f_theta(x_{n+1}, sigma_{n+1}), f_theta^-(Phi(x_{n+1}), sigma_n)) with
    x_{n+1} = x0 + sigma_{n+1} eps; `sigma` is sigma_{n+1} [B] > 0, `sigma_prev` sigma_n [B] >= 0, `target` the
    network theta^- (the student itself without gradient: iCT; or an EMA copy: CM, LCM)."""
    x = x0 + append_dims(sigma, x0.ndim).to(x0.dtype) * eps  # (B, ...) x_{n+1}
    with torch.no_grad():
        x_hat = ode_step(teacher, x, sigma, sigma_prev, cond, order)  # CM eq. (6): x_hat_n
        aim = consistency_fn(target, x_hat, sigma_prev, cond)  # f_theta^-(x_hat_n, sigma_n)
    return distance(student(x, sigma, cond), aim, kind)


def ddim_target(x: Tensor, x_next: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """The x0 for which one DDIM step from (x, sigma) lands on x_next at sigma_next (PD Algorithm 2, sigma view):
    x_next = x0 + (s' / s)(x - x0), so x0 = (x_next - (s' / s) x) / (1 - s' / s); sigma, sigma_next [B]."""
    ratio = append_dims(sigma_next / sigma, x.ndim).float()
    return (x_next.float() - ratio * x.float()) / (1 - ratio)


def progressive_loss(student: DenoiseFn, teacher: DenoiseFn, x0: Tensor, eps: Tensor, sigma: Tensor,
                     sigma_mid: Tensor, sigma_next: Tensor, cond: Any = None) -> Tensor:
    """PD Algorithm 2 per example ([B]): two DDIM steps of the teacher sigma -> sigma_mid -> sigma_next, the target
    x_tilde of one student step over both (`ddim_target`), weighted max(1 / sigma^2, 1) (PD eq. 10)."""
    x = x0 + append_dims(sigma, x0.ndim).to(x0.dtype) * eps  # (B, ...)
    with torch.no_grad():
        x_mid = ode_step(teacher, x, sigma, sigma_mid, cond)
        x_next = ode_step(teacher, x_mid, sigma_mid, sigma_next, cond)
        aim = ddim_target(x, x_next, sigma, sigma_next)
    weight = sigma.double().pow(-2).clamp(min=1.0).float()  # truncated SNR: max(SNR, 1), SNR = 1 / sigma^2
    return weight * (student(x, sigma, cond).float() - aim).pow(2).flatten(1).mean(1)


def insert_midpoints(sigmas: Tensor) -> Tensor:
    """A descending grid [n + 1] ending at 0 refined to [2n + 1] (float64): each interval split at its geometric
    midpoint, the last one (s -> 0), which has none, at s / 2."""
    levels = sigmas[:-1].double()
    if len(levels) == 0 or bool((levels <= 0).any()) or float(sigmas[-1]) != 0.0:
        raise ValueError(f"need a descending grid of positive levels ending at 0, got {sigmas.tolist()}")
    lower = torch.cat([levels[1:], levels[-1:] / 4])  # (n,) sqrt(s * s / 4) = s / 2 for the last interval
    mids = (levels * lower).sqrt()
    return torch.cat([torch.stack([levels, mids], 1).flatten(), sigmas.new_zeros(1, dtype=torch.float64)])
