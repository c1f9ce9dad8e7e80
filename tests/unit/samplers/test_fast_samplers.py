"""Fast samplers against exact answers: a Gaussian mixture has a closed-form denoiser (`difflab.diffusion.toy`)."""

from __future__ import annotations

import inspect

import pytest
import torch

from difflab.diffusion import Denoiser, DiscreteVPScheduler
from difflab.samplers import SAMPLERS, SamplerSpec, generate
from oracles import SCHED, assert_recovers_mixture, mixture_denoiser


def ode_solution(name, x_T, steps, **knobs):
    return SAMPLERS[name](mixture_denoiser, x_T, SCHED.inference_sigmas(steps), **knobs)


@pytest.fixture(scope="module")
def x_T():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2000, 2, generator=g) * SCHED.prior_std(float(SCHED.inference_sigmas(10)[0]))


@pytest.fixture(scope="module")
def reference(x_T):
    """The probability-flow ODE solved finely (Heun, 1000 steps) from the same starting points."""
    return ode_solution("heun", x_T, 1000)


def test_deterministic_samplers_converge_to_the_ode_solution_at_their_order(x_T, reference):
    """Halving the step size divides the error by ~2 (Euler, DDIM) or ~4 (Heun, DPM-Solver++ 2M)."""
    orders = {}
    for name in ("euler", "ddim", "heun", "dpmpp_2m"):
        errs = [(ode_solution(name, x_T, n) - reference).abs().mean().item() for n in (40, 80)]
        orders[name] = errs[0] / errs[1]
    assert 1.6 < orders["euler"] < 2.6 and 1.6 < orders["ddim"] < 2.6, orders
    assert orders["heun"] > 3.0 and orders["dpmpp_2m"] > 3.0, orders


@pytest.mark.parametrize("nfe,heun_ratio,dpm_ratio", [(40, 0.6, 0.3), (80, 0.3, 0.15)])
def test_higher_order_samplers_beat_euler_at_equal_nfe(x_T, reference, nfe, heun_ratio, dpm_ratio):
    """Measured here: at 40 NFE errors 0.050 / 0.026 / 0.011, at 80 NFE 0.026 / 0.006 / 0.003 (Euler / Heun / DPM++).

    Below ~20 NFE on this 157 -> 0.01 grid Heun's steps are too coarse to be in its asymptotic regime.
    """
    euler = (ode_solution("euler", x_T, nfe) - reference).abs().mean()
    heun = (ode_solution("heun", x_T, (nfe + 1) // 2) - reference).abs().mean()  # 2 * steps - 1 evaluations
    dpm = (ode_solution("dpmpp_2m", x_T, nfe) - reference).abs().mean()
    assert heun < heun_ratio * euler and dpm < dpm_ratio * euler, (euler, heun, dpm)


def test_euler_equals_ddim_eta0_in_the_sigma_view(x_T):
    torch.testing.assert_close(ode_solution("euler", x_T, 15), ode_solution("ddim", x_T, 15), rtol=1e-4, atol=1e-4)


def test_euler_ancestral_is_ddim_with_eta():
    spec_a, spec_d = SamplerSpec("euler_a", steps=12, eta=0.6), SamplerSpec("ddim", steps=12, eta=0.6)
    a, _ = generate(mixture_denoiser, SCHED, spec_a, n=5, shape=(2,), seed=3)
    d, _ = generate(mixture_denoiser, SCHED, spec_d, n=5, shape=(2,), seed=3)
    assert torch.equal(a, d)


@pytest.mark.parametrize("name,steps,knobs", [
    ("euler", 60, {}), ("heun", 30, {}), ("heun", 30, {"s_churn": 10.0}), ("dpmpp_2m", 30, {}),
    ("euler_a", 200, {}), ("ddim", 60, {}), ("ddpm", 300, {}),
])
def test_samples_have_the_mixtures_moments_and_weights(name, steps, knobs):
    x, nfe = generate(mixture_denoiser, SCHED, SamplerSpec(name, steps=steps, **knobs), n=3000, shape=(2,), seed=1,
                      batch_size=3000)
    assert nfe == (2 * steps - 1 if name == "heun" else steps)
    assert_recovers_mixture(x)


@pytest.mark.parametrize("name", ["euler", "heun", "euler_a", "dpmpp_2m"])
def test_every_sampler_runs_on_a_real_unet_with_any_grid(name):
    from difflab.nets import UNet

    net = UNet(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
               resolution=8, num_heads=1)
    for grid in ("leading", "karras"):
        scheduler = DiscreteVPScheduler(grid=grid)
        x, nfe = generate(Denoiser(net, scheduler), scheduler, SamplerSpec(name, steps=4), n=3, shape=(1, 8, 8))
        assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")


def test_dpmpp_2m_matches_diffusers_multistep_solver():
    from oracles import ToyEpsNet

    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                                beta_end=0.02,
                                                algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True)
    ref.set_timesteps(20)
    net = ToyEpsNet()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=g)
    x_T = x.clone()
    for t in ref.timesteps:
        x = ref.step(net(x, torch.full((3,), float(t))), t, x).prev_sample
    sigmas = ref.sigmas.double()  # the same grid: sqrt((1 - a) / a) at diffusers' timesteps, then 0
    scheduler = DiscreteVPScheduler()
    got = SAMPLERS["dpmpp_2m"](Denoiser(net, scheduler), x_T * scheduler.prior_std(float(sigmas[0])), sigmas)
    torch.testing.assert_close(got, x, atol=2e-4, rtol=1e-4)


def _diffusers_sigma_loop(ref, steps: int, seed: int, shape=(3, 2, 4, 4)):
    """Drive a diffusers sigma-space scheduler (Euler family) with the toy eps-model; returns (x_T noise, x0)."""
    from oracles import ToyEpsNet

    net = ToyEpsNet()
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g)
    x = z * ref.init_noise_sigma
    for t in ref.timesteps:
        eps = net(ref.scale_model_input(x, t), torch.full((shape[0],), float(t)))
        kwargs = {"generator": g} if "generator" in inspect.signature(ref.step).parameters else {}
        x = ref.step(eps, t, x, **kwargs).prev_sample
    return z, x


@pytest.mark.parametrize("name,cls", [("euler", "EulerDiscreteScheduler"), ("euler_a", "EulerAncestralDiscreteScheduler"),
                                      ("heun", "HeunDiscreteScheduler")])
def test_euler_family_matches_diffusers_on_the_same_sigmas(name, cls):
    from oracles import ToyEpsNet

    ref = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  timestep_spacing="leading")  # explicit: Heun's defaults are Stable Diffusion's betas
    z, want = _diffusers_sigma_loop(ref, 25, seed=2)
    sigmas = ref.sigmas.double()
    if name == "heun":  # diffusers stores each interior sigma twice (one per evaluation); the grid is the unique one
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])
    assert sigmas[-1] == 0 and len(sigmas) == 26
    scheduler = DiscreteVPScheduler()
    g = torch.Generator().manual_seed(2)
    torch.randn(z.shape, generator=g)  # the same draw order as the diffusers loop: x_T first, then step noise
    got = SAMPLERS[name](Denoiser(ToyEpsNet(), scheduler), z * scheduler.prior_std(float(sigmas[0])), sigmas,
                         generator=g)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
