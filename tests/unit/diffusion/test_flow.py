"""Flow matching (rectified flow) against closed forms: Gaussian data has a known velocity, and diffusers'
FlowMatchEulerDiscreteScheduler is the reference for Euler in t."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from difflab.diffusion import Denoiser, DiffusionLoss, FlowScheduler
from difflab.errors import ConfigError
from difflab.samplers import SAMPLERS, SamplerSpec, generate
from oracles import assert_recovers_mixture, mixture_denoiser

SD = 0.5  # data std of the Gaussian oracle


def exact_velocity(x_t: torch.Tensor, t: torch.Tensor, sd: float = SD) -> torch.Tensor:
    """E[eps - x0 | x_t] for x0 ~ N(0, sd^2), x_t = (1 - t) x0 + t eps: (t - (1 - t) sd^2) x_t / Var[x_t].

    Derived from the joint Gaussian of (x0, eps, x_t), without difflab's preconditioning."""
    t = t.reshape(-1, *([1] * (x_t.ndim - 1))).double()
    var = (1 - t) ** 2 * sd**2 + t**2
    return (t - (1 - t) * sd**2) * x_t.double() / var


class ExactVelocityNet(nn.Module):
    """The network of a perfectly trained flow model on Gaussian data: F(x_t, 1000 t) = E[v | x_t]."""

    def forward(self, x_in, c_noise, cond=None):
        return exact_velocity(x_in, c_noise / 1000.0).float()


def test_flow_scalings_are_the_straight_line_in_the_sigma_view():
    """c_in x = x_t, and the true velocity as F gives D = x0 exactly: the row of precond.py."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, generator=g, dtype=torch.float64) * SD
    eps = torch.randn(64, generator=g, dtype=torch.float64)
    t = torch.linspace(1e-4, 1 - 1e-4, 64, dtype=torch.float64)
    sched = FlowScheduler()
    sigma = sched.sigma_of_t(t)
    c_skip, c_out, c_in, c_noise = sched.scalings(sigma)
    x = x0 + sigma * eps  # the sigma view
    torch.testing.assert_close(c_in * x, (1 - t) * x0 + t * eps)  # eq. (1)
    torch.testing.assert_close(c_skip * x + c_out * (eps - x0), x0)  # F = v gives the exact denoiser
    torch.testing.assert_close(c_noise, 1000 * t)
    golden = torch.stack(list(sched.scalings(torch.tensor([1.0, 3.0], dtype=torch.float64))), 1)
    torch.testing.assert_close(golden, torch.tensor([[0.5, -0.5, 0.5, 500.0], [0.25, -0.75, 0.25, 750.0]],
                                                    dtype=torch.float64))


def test_exact_velocity_gives_the_exact_denoiser_of_gaussian_data():
    sched = FlowScheduler()
    sigma = torch.logspace(-3, 3, 13, dtype=torch.float64)
    std = (SD**2 + sigma**2).sqrt().reshape(-1, 1, 1, 1).float()  # the marginal std in the sigma view
    x = torch.randn(13, 1, 2, 2, generator=torch.Generator().manual_seed(1)) * std
    got = Denoiser(ExactVelocityNet(), sched)(x, sigma)
    want = x.double() * SD**2 / (SD**2 + sigma.reshape(-1, 1, 1, 1) ** 2)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dist", ["uniform", "logit_normal"])
def test_loss_of_exact_velocity_is_the_irreducible_variance(dist):
    """weighting=simple is the CFM loss ||F - v||^2; its minimum is E_t[Var[v | x_t]] = E_t[sd^2 / Var[x_t]]."""
    sched = FlowScheduler(t_distribution=dist)
    t = sched.t_of_sigma(sched.sample_training_sigma(400_000, generator=torch.Generator().manual_seed(3)))
    expected = (SD**2 / ((1 - t) ** 2 * SD**2 + t**2)).mean().item()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20_000, 1, 2, 2, generator=g) * SD
    losses = DiffusionLoss()(Denoiser(ExactVelocityNet(), sched), x0, generator=g)
    assert losses.shape == (20_000,) and torch.isfinite(losses).all()
    assert losses.mean().item() == pytest.approx(expected, rel=0.05)


def test_training_t_distributions():
    g = torch.Generator().manual_seed(0)
    lo = FlowScheduler(t_distribution="logit_normal", logit_mean=0.5, logit_std=0.8)
    logit = lo.sample_training_sigma(200_000, generator=g).log()  # logit(t) = log sigma
    assert logit.mean().item() == pytest.approx(0.5, abs=0.01) and logit.std().item() == pytest.approx(0.8, rel=0.01)
    un = FlowScheduler(t_distribution="uniform", eps_t=1e-5)
    t = un.t_of_sigma(un.sample_training_sigma(200_000, generator=g))
    assert t.dtype == torch.float64 and t.min().item() >= 1e-5 and t.max().item() < 1
    counts = torch.histc(t, bins=10, min=0.0, max=1.0)
    assert torch.allclose(counts / 20_000, torch.ones(10, dtype=torch.float64), rtol=0.03)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_uniform_grid_is_uniform_in_t_then_shifted(shift):
    sched = FlowScheduler(shift=shift)
    sig = sched.inference_sigmas(9)
    assert sig.shape == (10,) and sig[-1] == 0 and torch.all(sig[:-1] > sig[1:])
    assert sig[0].item() == pytest.approx(sched.sigma_max) and sig[-2].item() == pytest.approx(sched.sigma_min)
    u = torch.linspace(0.999, 1e-3, 9, dtype=torch.float64)
    torch.testing.assert_close(sched.t_of_sigma(sig[:-1]), shift * u / (1 + (shift - 1) * u))


@pytest.mark.parametrize("grid", ["karras", "logsnr"])
def test_common_grids_span_the_flow_range(grid):
    sched = FlowScheduler(grid=grid)
    sig = sched.inference_sigmas(6)
    assert sig[0].item() == pytest.approx(999.0) and sig[-2].item() == pytest.approx(1e-3 / 0.999) and sig[-1] == 0


def test_euler_in_the_sigma_view_is_euler_in_t():
    """x_t' = x_t + (t' - t) v (Liu et al., SD3) written out in t, against difflab's Euler on the mapped grid."""
    sched = FlowScheduler(shift=2.0)
    sig = sched.inference_sigmas(12)
    z = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    x_t = z.double() * sched.prior_std(float(sig[0])) / (1 + sig[0])  # the same start, in x_t
    ts = sched.t_of_sigma(sig)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x_t = x_t + (t_next - t) * exact_velocity(x_t, t.expand(len(x_t)))
    got = SAMPLERS["euler"](Denoiser(ExactVelocityNet(), sched), z * sched.prior_std(float(sig[0])), sig)
    torch.testing.assert_close(got.double(), x_t, rtol=1e-4, atol=1e-5)


def test_samples_of_the_exact_model_have_the_data_moments():
    x, _ = generate(Denoiser(ExactVelocityNet(), FlowScheduler()), FlowScheduler(), SamplerSpec("euler", steps=50),
                    n=4000, shape=(1, 2, 2), seed=0, batch_size=4000)
    assert abs(x.std().item() - SD) < 0.01 * SD + 3 * SD / (2 * x.numel()) ** 0.5
    assert abs(x.mean().item()) < 4 * SD / x.numel() ** 0.5


DETERMINISTIC = sorted(k for k, info in SAMPLERS.items() if info.is_deterministic({}))
STOCHASTIC = sorted(k for k in set(SAMPLERS) - set(DETERMINISTIC) if not SAMPLERS[k].consistency)  # lcm: its own test
STEPS = {"dpmpp_3m_sde": 100}  # 3rd-order SDE multistep on the uniform-t grid: its last step is 5x its history
FLOW = FlowScheduler()


@pytest.fixture(scope="module")
def ode_reference():
    """x_T [300, 2] at sigma_max and the flow ODE solved finely from it: UniPC, 100 Karras steps (its gaps to 300
    such steps and to DPM++ 2M with 400 uniform-t steps: 5e-4)."""
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)) * FLOW.prior_std(FLOW.sigma_max)
    return z, SAMPLERS["unipc"](mixture_denoiser, z, FLOW.with_grid("karras").inference_sigmas(100))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_every_deterministic_sampler_solves_the_flow_ode(name, ode_reference):
    """40 steps on the flow's own grid (uniform in t); measured mean errors 3e-4 (iPNDM) to 0.036 (DPM++ 3M)."""
    z, reference = ode_reference
    spec = SamplerSpec(name, steps=40)
    x = spec.fn(mixture_denoiser, z, spec.sigmas(FLOW), **spec.knobs)
    assert (x - reference).abs().mean().item() < 0.05


@pytest.mark.parametrize("name", STOCHASTIC)
def test_every_stochastic_sampler_recovers_the_mixture_under_the_flow_schedule(name):
    spec = SamplerSpec(name, steps=STEPS.get(name, 40))
    sig = spec.sigmas(FLOW)
    g = torch.Generator().manual_seed(0)
    x = spec.fn(mixture_denoiser, torch.randn(2000, 2, generator=g) * FLOW.prior_std(float(sig[0])), sig, generator=g,
                **spec.knobs)
    assert torch.isfinite(x).all()
    assert_recovers_mixture(x, cov_rtol=0.1)


def test_euler_matches_diffusers_flow_match_euler_step_by_step():
    diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")
    steps, shift = 10, 3.0
    ref = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    ours = FlowScheduler(shift=shift)
    ref.set_timesteps(sigmas=torch.linspace(ours.t_max, ours.t_min, steps).tolist())  # diffusers shifts them itself
    sig = ours.inference_sigmas(steps)
    torch.testing.assert_close(ref.sigmas.double(), ours.t_of_sigma(sig), rtol=1e-6, atol=1e-7)

    def velocity(x_t, t):  # a fixed nonlinear velocity model v(x_t, 1000 t) driving both
        return torch.tanh(x_t) * (0.5 + 0.4 * t.reshape(-1, 1, 1, 1) / 1000) - 0.2 * x_t

    class Net(nn.Module):
        def forward(self, x_in, c_noise, cond=None):
            return velocity(x_in, c_noise)

    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    x_T = z * ours.prior_std(float(sig[0]))
    states: list[torch.Tensor] = []
    SAMPLERS["euler"](Denoiser(Net(), ours), x_T, sig, callback=lambda s: states.append(s["x"] / (1 + s["sigma_next"])))
    x = x_T / (1 + sig[0].item())  # the same x_t start
    for i, t in enumerate(ref.timesteps):
        x = ref.step(velocity(x, t.expand(3)), t, x).prev_sample
        torch.testing.assert_close(states[i], x, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("kwargs,key", [
    ({"t_distribution": "nope"}, "scheduler.t_distribution"),
    ({"logit_std": -1.0}, "scheduler.logit_std"),
    ({"t_min": 0.5, "t_max": 0.4}, "scheduler.t_min"),
    ({"t_max": 1.0}, "scheduler.t_min"),
    ({"shift": 0.0}, "scheduler.shift"),
    ({"eps_t": 0.0}, "scheduler.eps_t"),
    ({"grid": "leading"}, "scheduler.grid"),
])
def test_bad_flow_options_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        FlowScheduler(**kwargs)


def test_sampler_grid_on_the_flow_schedule():
    spec = SamplerSpec("euler", steps=8, grid="karras")
    sig = spec.sigmas(FlowScheduler())
    assert sig[0].item() == pytest.approx(999.0) and math.isclose(float(sig[-1]), 0.0)
    with pytest.raises(ConfigError, match="sampler.grid"):
        SamplerSpec("euler", steps=8, grid="trailing").sigmas(FlowScheduler())
