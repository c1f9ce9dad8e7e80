"""Distillation targets (difflab.diffusion.distillation) against oracles: a Gaussian data set, whose probability-flow
ODE and consistency function are known in closed form, the samplers' own steps, and DDIM's algebra."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.distillation import (
    consistency_fn,
    consistency_loss,
    ddim_target,
    distance,
    insert_midpoints,
    ode_step,
    progressive_loss,
)
from difflab.samplers import SAMPLERS
from oracles import mixture_denoiser

SD = 0.5  # data ~ N(0, SD^2 I)


def gaussian_denoiser(x, sigma, cond=None):
    """E[x0 | x] for x0 ~ N(0, SD^2 I): x SD^2 / (SD^2 + sigma^2)."""
    s = sigma.double().reshape(-1, *([1] * (x.ndim - 1)))
    return (x.double() * SD**2 / (SD**2 + s**2)).float()


def gaussian_consistency(x, sigma, cond=None):
    """The exact consistency function of Gaussian data: the ODE carries x at sigma to x SD / sqrt(SD^2 + sigma^2)."""
    s = sigma.double().reshape(-1, *([1] * (x.ndim - 1)))
    return (x.double() * SD / (SD**2 + s**2).sqrt()).float()


def test_euler_step_is_ddim_and_heun_is_the_samplers_step_per_example():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, generator=g) * 3
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    sigma_next = torch.tensor([2.0, 1.0, 0.0, 0.2, 0.0, 0.5], dtype=torch.float64)
    euler = ode_step(mixture_denoiser, x, sigma, sigma_next)
    d0 = mixture_denoiser(x, sigma)
    ratio = (sigma_next / sigma).float().reshape(-1, 1)
    torch.testing.assert_close(euler, d0 + ratio * (x - d0))  # DDIM eq. (12) in the sigma view
    heun = ode_step(mixture_denoiser, x, sigma, sigma_next, order=2)
    for i in range(6):  # row i alone through the registered Heun sampler (Euler on its last step to 0)
        grid = torch.stack([sigma[i], sigma_next[i]])
        torch.testing.assert_close(heun[i : i + 1], SAMPLERS["heun"](mixture_denoiser, x[i : i + 1], grid))


def test_euler_and_heun_steps_have_local_errors_of_orders_2_and_3_on_the_gaussian_ode():
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1)) * math.sqrt(SD**2 + 4.0)
    sigma = torch.full((1000,), 2.0, dtype=torch.float64)

    def error(h: float, order: int) -> float:
        exact = x * math.sqrt((SD**2 + (2.0 - h) ** 2) / (SD**2 + 4.0))  # the ODE carries x along sqrt(SD^2 + s^2)
        return float((ode_step(gaussian_denoiser, x.double(), sigma, sigma - h, order=order) - exact).abs().max())

    assert error(0.2, 1) / error(0.1, 1) == pytest.approx(4.0, rel=0.15)
    assert error(0.2, 2) / error(0.1, 2) == pytest.approx(8.0, rel=0.15)
    assert error(0.1, 2) < error(0.1, 1) / 10


def test_consistency_fn_is_the_identity_at_sigma_zero_and_the_denoiser_elsewhere():
    x = torch.randn(4, 3)
    sigma = torch.tensor([0.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    calls = []

    def denoise(x, s, cond=None):
        calls.append(len(x))
        return gaussian_denoiser(x, s)

    out = consistency_fn(denoise, x, sigma)
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]])
    torch.testing.assert_close(out[[1, 3]], gaussian_denoiser(x[[1, 3]], sigma[[1, 3]]))
    assert calls == [2]  # the network runs on the rows with sigma > 0 only


def test_pseudo_huber_is_l2_norm_far_away_and_quadratic_near_zero():
    a = torch.zeros(2, 100)
    b = torch.zeros(2, 100)
    b[0, 0] = 10.0
    b[1, 0] = 1e-4
    c = 0.00054 * 10.0
    d = distance(a, b, "pseudo_huber")
    assert d[0] == pytest.approx(10.0 - c, rel=1e-4)
    assert d[1] == pytest.approx(1e-8 / (2 * c), rel=1e-2)
    assert distance(a, b, "l2")[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown distance"):
        distance(a, b, "l1")


def test_the_exact_consistency_function_has_no_consistency_loss_and_the_denoiser_has_some():
    g = torch.Generator().manual_seed(2)
    levels = torch.cat([torch.zeros(1), torch.logspace(-2, 1.5, 40)]).double()  # sigma_0 = 0 < ... < sigma_40
    n = torch.randint(0, len(levels) - 1, (4000,), generator=g)
    x0, eps = torch.randn(4000, 2, generator=g) * SD, torch.randn(4000, 2, generator=g)
    args = (gaussian_denoiser, x0, eps, levels[n + 1], levels[n])
    exact = consistency_loss(gaussian_consistency, gaussian_consistency, *args, order=2, kind="l2")
    denoiser = consistency_loss(gaussian_denoiser, gaussian_denoiser, *args, order=2, kind="l2")
    assert exact.mean() < 1e-6 and denoiser.mean() > 1e3 * exact.mean()  # what remains: Heun's error


def test_one_ddim_step_to_the_target_lands_on_the_teachers_two_steps():
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    sigma = torch.rand(8, generator=g, dtype=torch.float64) * 5 + 1
    mid, last = sigma * 0.6, sigma * 0.3
    x = x0 + sigma.float().reshape(-1, 1) * eps
    two = ode_step(mixture_denoiser, ode_step(mixture_denoiser, x, sigma, mid), mid, last)
    aim = ddim_target(x, two, sigma, last)
    one = aim + (last / sigma).float().reshape(-1, 1) * (x - aim)  # a DDIM step whose x0 is the target
    torch.testing.assert_close(one, two, atol=1e-4, rtol=1e-4)
    # a student equal to the target has no progressive-distillation loss
    table = dict(zip(sigma.tolist(), aim))
    student = lambda x, s, cond=None: torch.stack([table[v] for v in s.tolist()])
    assert progressive_loss(student, mixture_denoiser, x0, eps, sigma, mid, last).max() < 1e-8


def test_progressive_target_is_the_teachers_sample_on_the_last_step_and_the_weight_is_truncated_snr():
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    zero = torch.zeros(5, dtype=torch.float64)
    x = x0 + sigma.float().reshape(-1, 1) * eps
    two = ode_step(mixture_denoiser, ode_step(mixture_denoiser, x, sigma, sigma / 2), sigma / 2, zero)
    torch.testing.assert_close(ddim_target(x, two, sigma, zero), two)
    zero_student = lambda x, s, cond=None: torch.zeros_like(x)
    loss = progressive_loss(zero_student, mixture_denoiser, x0, eps, sigma, sigma / 2, zero)
    torch.testing.assert_close(loss, sigma.pow(-2).clamp(min=1).float() * two.pow(2).mean(1))


def test_midpoints_refine_a_grid_and_the_trailing_grid_nests():
    grid = torch.tensor([8.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    fine = insert_midpoints(grid)
    torch.testing.assert_close(fine, torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(fine[::2], grid)
    with pytest.raises(ValueError, match="descending grid"):
        insert_midpoints(torch.tensor([1.0, 0.5], dtype=torch.float64))
    trailing = DiscreteVPScheduler(grid="trailing")
    for n in (1, 2, 4, 8, 16):  # progressive distillation's stages use the scheduler's own grids here
        torch.testing.assert_close(trailing.inference_sigmas(2 * n)[::2], trailing.inference_sigmas(n))
