"""DPM-Solver++ 3M / SDE, UniPC, LMS, PLMS, iPNDM: step-by-step against diffusers, and their convergence order."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler
from difflab.samplers import SAMPLERS
from oracles import mixture_denoiser
from references import DIFFUSERS_BETAS, difflab_vp_run, diffusers_vp_loop

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")
BETAS = DIFFUSERS_BETAS


@pytest.mark.parametrize("name,algorithm,order,steps", [
    ("dpmpp_3m", "dpmsolver++", 3, 20), ("dpmpp_3m", "dpmsolver++", 3, 8),
    ("dpmpp_2m_sde", "sde-dpmsolver++", 2, 12),
])
def test_dpmpp_multistep_matches_diffusers(name, algorithm, order, steps):
    ref = diffusers.DPMSolverMultistepScheduler(**BETAS, algorithm_type=algorithm, solver_order=order,
                                                lower_order_final=True)
    z, want = diffusers_vp_loop(ref, steps, seed=4)
    got = difflab_vp_run(name, z, ref.sigmas.double(), seed=4)
    torch.testing.assert_close(got, want, atol=3e-4, rtol=1e-4)


def test_dpmpp_3m_sde_matches_diffusers_until_its_third_order_step_and_then_converges():
    """diffusers' third-order sde-dpmsolver++ update has -1/2 in the D2 coefficient where the integral gives +1/2
    (dpm_solver.py), so the two agree step by step only through the first- and second-order warm-up steps.
    With +1/2 the sampler converges on DDPM's leading grid; measured W2 to the mixture at 100 steps (3 seeds):
    0.04-0.07 with +1/2, 6.9-7.0 with diffusers' -1/2 (the samples diverge)."""
    from difflab.diffusion.toy import three_gaussians

    ref = diffusers.DPMSolverMultistepScheduler(**BETAS, algorithm_type="sde-dpmsolver++", solver_order=3,
                                                lower_order_final=True)
    want: list[torch.Tensor] = []
    z, _ = diffusers_vp_loop(ref, 20, seed=4, states=want)
    got: list[torch.Tensor] = []
    sigmas = ref.sigmas.double()
    difflab_vp_run("dpmpp_3m_sde", z, sigmas, seed=4, callback=lambda s: got.append(s["x"]))
    alphas = (1 + sigmas[1:] ** 2).rsqrt().float()
    for i in range(2):
        torch.testing.assert_close(got[i] * alphas[i], want[i], atol=3e-4, rtol=1e-4)
    scheduler = DiscreteVPScheduler()
    sig = scheduler.inference_sigmas(100)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4000, 2, generator=g) * scheduler.prior_std(float(sig[0]))
    x = SAMPLERS["dpmpp_3m_sde"](mixture_denoiser, x_T, sig, generator=g)
    assert three_gaussians().w2_gaussian(x) < 0.15


@pytest.mark.parametrize("variant,order,steps", [("bh2", 2, 20), ("bh2", 3, 20), ("bh1", 3, 10), ("bh1", 2, 6)])
def test_unipc_matches_diffusers(variant, order, steps):
    """Every step's sample. diffusers' bh1 ends in NaN (B(h) = -inf times a zero residual at sigma = 0), so the
    last step is compared only for bh2; difflab returns D there, as diffusers' bh2 does."""
    ref = diffusers.UniPCMultistepScheduler(**BETAS, solver_order=order, solver_type=variant, lower_order_final=True)
    want: list[torch.Tensor] = []
    z, _ = diffusers_vp_loop(ref, steps, seed=5, states=want)
    got: list[torch.Tensor] = []
    sigmas = ref.sigmas.double()
    difflab_vp_run("unipc", z, sigmas, seed=5, order=order, variant=variant, callback=lambda s: got.append(s["x"]))
    alphas = (1 + sigmas[1:] ** 2).rsqrt().float()  # x_vp = alpha x in the sigma view
    n = steps if variant == "bh2" else steps - 1
    for i in range(n):
        torch.testing.assert_close(got[i] * alphas[i], want[i], atol=3e-4, rtol=1e-4)


def test_lms_matches_diffusers():
    ref = diffusers.LMSDiscreteScheduler(**BETAS, timestep_spacing="leading")
    z, want = diffusers_vp_loop(ref, 25, seed=6, sigma_view=True)
    got = difflab_vp_run("lms", z, ref.sigmas.double(), seed=6)
    torch.testing.assert_close(got, want, atol=3e-4, rtol=1e-4)


def test_plms_matches_diffusers_pndm_without_prk_steps():
    ref = diffusers.PNDMScheduler(**BETAS, skip_prk_steps=True, set_alpha_to_one=True)
    z, want = diffusers_vp_loop(ref, 25, seed=7)
    t = torch.unique_consecutive(ref.timesteps)
    sigmas = torch.cat([DiscreteVPScheduler().sigmas[t], torch.zeros(1, dtype=torch.float64)])
    got = difflab_vp_run("plms", z, sigmas, seed=7)
    torch.testing.assert_close(got, want, atol=3e-4, rtol=1e-4)


# The deterministic part of samplers that draw noise by default: their noise knob at zero.
DETERMINISTIC_KNOBS = {"dpmpp_sde": {"eta": 0.0}, "dpm_2_a": {"eta": 0.0}, "dpmpp_2s_a": {"eta": 0.0},
                       "restart": {"restart_times": 0}}


def test_measured_convergence_order_matches_the_declared_one():
    """Every deterministic grid sampler: log2(err(24 steps) / err(48 steps)) >= declared order - 0.3 on the exact
    mixture denoiser (EDM Karras grid 80 -> 0.02), against UniPC with 400 steps (error ~1e-7) from the same x_T.

    Measured: euler 1.06, heun 2.17, dpmpp_2m 2.11, dpmpp_3m 2.97, unipc (order 3, corrector) 3.80, lms 2.74,
    plms / ipndm 2.26, deis (order 3) 2.20 (2.70 from 48 to 96 steps), dpm_2 2.11, dpm_fast 3.33 (24 -> 48
    evaluations), and with their noise off: dpmpp_sde / dpmpp_2s_a (DPM-Solver++(2S)) 1.89, dpm_2_a 2.11 (= dpm_2),
    restart 2.17 (= heun)."""
    from difflab.diffusion.schedules import karras_sigmas

    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    run = lambda name, n, **kw: SAMPLERS[name](mixture_denoiser, x_T, karras_sigmas(n, 0.02, 80.0), **kw)  # noqa: E731
    reference = run("unipc", 400)
    knobs = {k: {} for k, info in SAMPLERS.items() if info.is_deterministic({})} | DETERMINISTIC_KNOBS
    measured = {}
    for name, kw in knobs.items():
        if name in ("ode", "dpm_adaptive"):  # adaptive: the error follows rtol / atol, not the grid
            continue
        errs = [(run(name, n, **kw) - reference).abs().mean().item() for n in (24, 48)]
        measured[name] = (math.log2(errs[0] / errs[1]), SAMPLERS[name].order)
    assert all(got >= order - 0.3 for got, order in measured.values()), measured
    assert measured["unipc"][0] > 3.5 and measured["dpmpp_3m"][0] > 2.7, measured  # UniC lifts UniP-3 by one order
    assert measured["dpm_fast"][0] > 2.7, measured


def test_adaptive_dpm_solver_reports_its_nfe_and_tightens_with_tolerance():
    """Measured: rtol 0.1 / 0.01 / 0.001 -> 79 / 231 / 655 NFE, mean error 8e-3 / 3e-4 / 3e-5 (2000 points)."""
    from difflab.samplers import SamplerSpec, generate
    from oracles import SCHED

    reference, _ = generate(mixture_denoiser, SCHED, SamplerSpec("unipc", steps=300), n=300, shape=(2,), seed=0)
    errors, nfes = [], []
    for rtol in (0.1, 0.01):
        x, nfe = generate(mixture_denoiser, SCHED, SamplerSpec("dpm_adaptive", steps=300, rtol=rtol, atol=rtol / 10),
                          n=300, shape=(2,), seed=0)
        errors.append((x - reference).abs().mean().item())
        nfes.append(nfe)
    assert nfes[0] < nfes[1] < 400 and errors[1] < errors[0] / 5 and errors[1] < 2e-3, (nfes, errors)


@pytest.mark.parametrize("order,steps,spacing", [(2, 10, "linspace"), (3, 20, "linspace"), (3, 8, "leading")])
def test_deis_matches_diffusers(order, steps, spacing):
    """Every step's sample against DEISMultistepScheduler (logrho). diffusers ends at sigma_min, not 0, and so
    does the grid given to difflab here (its last step is then a DEIS step, as diffusers')."""
    ref = diffusers.DEISMultistepScheduler(**BETAS, solver_order=order, timestep_spacing=spacing)
    want: list[torch.Tensor] = []
    z, _ = diffusers_vp_loop(ref, steps, seed=3, states=want)
    got: list[torch.Tensor] = []
    sigmas = ref.sigmas.double()
    difflab_vp_run("deis", z, sigmas, seed=3, order=order, callback=lambda s: got.append(s["x"]))
    alphas = (1 + sigmas[1:] ** 2).rsqrt().float()
    for i in range(steps):
        torch.testing.assert_close(got[i] * alphas[i], want[i], atol=3e-4, rtol=1e-4)


def _brownian_draws(tree, sigmas: torch.Tensor) -> list[torch.Tensor]:
    """The standard normals (z_1, z_2 per step) that make difflab's dpmpp_sde draw diffusers' Brownian-tree noises.

    The tree is queried at diffusers' own float32 levels (a Brownian path moves by ~sqrt(dt) under a rounding dt)."""
    draws = []
    for s, t in zip(sigmas[:-2], sigmas[1:-1]):
        lam, lam_next = -s.float().log(), -t.float().log()
        n1 = tree(lam.neg().exp(), (-(lam + (lam_next - lam) * 0.5)).exp())
        n2 = tree(lam.neg().exp(), lam_next.neg().exp())
        a, b = s - (s * t).sqrt(), (s * t).sqrt() - t
        draws += [n1, ((n2 * (a + b).sqrt() - a.sqrt() * n1) / b.sqrt()).float()]
    return draws


@pytest.mark.parametrize("steps", [6, 12])
def test_dpmpp_sde_matches_diffusers_with_its_brownian_noise(monkeypatch, steps):
    """DPMSolverSDEScheduler (needs torchsde) step by step: the same update, and the same noise once difflab's two
    per-step normals are set to diffusers' Brownian-tree increments."""
    pytest.importorskip("torchsde", reason="diffusers' DPMSolverSDEScheduler needs torchsde (dev extra)")
    import difflab.samplers.singlestep as singlestep

    ref = diffusers.DPMSolverSDEScheduler(**BETAS, noise_sampler_seed=11)
    want: list[torch.Tensor] = []
    z, _ = diffusers_vp_loop(ref, steps, seed=3, sigma_view=True, states=want)
    sigmas = torch.cat([ref.sigmas[:1], ref.sigmas[1:-1:2], ref.sigmas[-1:]]).double()  # diffusers repeats levels
    draws = iter(_brownian_draws(ref.noise_sampler, sigmas))
    monkeypatch.setattr(singlestep, "randn_like", lambda x, g: next(draws))
    got: list[torch.Tensor] = []
    difflab_vp_run("dpmpp_sde", z, sigmas, seed=3, callback=lambda s: got.append(s["x"]))
    assert next(draws, None) is None  # two normals per step but the last
    for i in range(steps):  # diffusers' float32 steps at sigma_max = 157 differ by ~3e-5 of the samples' scale
        target = want[min(2 * i + 1, 2 * steps - 2)]
        torch.testing.assert_close(got[i], target, atol=1e-4 * float(target.abs().max()), rtol=1e-4)


def test_dpmpp_sde_noises_are_one_brownian_path():
    """With D = 0 from x = 0 the two stages give x_mid = su_1 z_1 and x_next = su_2 n_2: their correlation is that
    of two increments of one Brownian path from sigma = 4, to 2 and to 1: sqrt(2 / 3)."""
    inputs: list[torch.Tensor] = []

    def zero(x, sigma, cond=None):
        inputs.append(x)
        return torch.zeros_like(x)

    sigmas = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)
    SAMPLERS["dpmpp_sde"](zero, torch.zeros(40000, 1), sigmas, generator=torch.Generator().manual_seed(0))
    corr = torch.corrcoef(torch.cat([inputs[1].T, inputs[2].T]))[0, 1]
    assert abs(float(corr) - math.sqrt(2 / 3)) < 0.02, float(corr)
