"""The web UI's DPM2, DPM2 a, DPM++ 2S a, DPM fast, DPM++ 2M SDE Heun and Restart: step by step against k-diffusion
(and diffusers where it has the sampler), Restart against its algorithm, DPM adaptive against k-diffusion's answer."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler, EDMScheduler
from difflab.errors import ConfigError
from difflab.samplers import SAMPLERS, SamplerSpec, StackedGenerator, generate
from oracles import mixture_denoiser
from references import DIFFUSERS_BETAS, difflab_vp_run, diffusers_vp_loop, k_diffusion

GRIDS = {"leading": DiscreteVPScheduler().inference_sigmas(12), "karras": EDMScheduler().inference_sigmas(12)}


def _start(sigmas: torch.Tensor, n: int = 64) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])


def _noises(seed: int, dtype: torch.dtype = torch.float32):
    """k-diffusion's noise_sampler drawing what difflab draws from a generator seeded `seed`, in the same order."""
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn((64, 2), generator=g, dtype=dtype)


def _k_denoiser(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
    return mixture_denoiser(x, sigma.double())


def _compare(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """difflab reports the sample after step i, k-diffusion the one before: got[i] = want[i + 1]."""
    assert len(got) == len(want), (len(got), len(want))
    for i, (a, b) in enumerate(zip(got[:-1], want[1:])):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {i}")


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("name,k_name,knobs", [
    ("dpm_2", "sample_dpm_2", {}),
    ("dpm_2_a", "sample_dpm_2_ancestral", {}),
    ("dpm_2_a", "sample_dpm_2_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("dpmpp_2s_a", "sample_dpmpp_2s_ancestral", {}),
    ("dpmpp_2s_a", "sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", {}),
])
def test_web_ui_samplers_match_k_diffusion_step_by_step(name, k_name, knobs, grid):
    """Every step's sample and the result, to 1e-4, with k-diffusion drawing difflab's noises (its noise_sampler)."""
    K = k_diffusion().sampling
    sigmas = GRIDS[grid]
    x_T = _start(sigmas)
    extra = {"solver_type": "heun"} if name == "dpmpp_2m_sde_heun" else {}
    if name != "dpm_2":  # DPM2's only noise is the churn (the next test)
        extra["noise_sampler"] = _noises(3)
    want: list[torch.Tensor] = []
    final = getattr(K, k_name)(_k_denoiser, x_T.clone(), sigmas.float(), disable=True,
                               callback=lambda s: want.append(s["x"]), **knobs, **extra)
    got: list[torch.Tensor] = []
    out = SAMPLERS[name](mixture_denoiser, x_T.clone(), sigmas, generator=torch.Generator().manual_seed(3),
                         callback=lambda s: got.append(s["x"]), **knobs)
    _compare(got, want)
    torch.testing.assert_close(out, final, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_dpm2_churn_matches_k_diffusion(grid):
    """EDM's churn draws from the global generator in both (k-diffusion every step, difflab where gamma > 0: every
    step here, s_tmin = 0)."""
    K = k_diffusion().sampling
    sigmas, knobs = GRIDS[grid], {"s_churn": 4.0, "s_noise": 1.003}
    x_T = _start(sigmas)
    torch.manual_seed(11)
    want = K.sample_dpm_2(_k_denoiser, x_T.clone(), sigmas.float(), disable=True, **knobs)
    torch.manual_seed(11)
    got = SAMPLERS["dpm_2"](mixture_denoiser, x_T.clone(), sigmas, **knobs)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _gaussian64(x: torch.Tensor, sigma: torch.Tensor, cond: object = None) -> torch.Tensor:
    """The exact denoiser of N(0, 0.5^2), in the sample's dtype (float64 here)."""
    return x * 0.25 / (0.25 + sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) ** 2)


@pytest.mark.parametrize("steps,eta,dtype", [
    (10, 0.0, torch.float32), (11, 0.0, torch.float32), (21, 0.0, torch.float32),  # n mod 3 = 1, 2, 0
    (5, 0.0, torch.float64), (9, 0.0, torch.float64), (10, 1.0, torch.float64), (11, 1.0, torch.float64),
    (21, 1.0, torch.float64),
])
def test_dpm_fast_matches_k_diffusion_and_ends_with_the_denoiser(steps, eta, dtype):
    """difflab's state at the grid's last level is k-diffusion's result (its n = steps evaluations between the grid's
    ends); the trailing 0 adds x = D(x, sigma_min): steps + 1 evaluations. Its noise-prediction steps over DDPM's range
    cancel x ~ 157 against sigma eps: in float32 the two differ by up to 1e-3 on single mixture samples below 10 steps
    or with eta = 1 (median 1e-4 at 5 steps), so those cases run in float64 on the exact Gaussian denoiser
    (k-diffusion with float64 as torch's default dtype, for its lambda grid): there they agree to 1e-12."""
    K = k_diffusion().sampling
    scheduler = DiscreteVPScheduler(grid="karras")
    sigmas = scheduler.inference_sigmas(steps)
    x_T = _start(sigmas).to(dtype)
    denoise = mixture_denoiser if dtype == torch.float32 else _gaussian64
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        want = K.sample_dpm_fast(lambda x, s: denoise(x, s), x_T.clone(), float(sigmas[-2]), float(sigmas[0]), steps,
                                 disable=True, eta=eta, noise_sampler=_noises(5, dtype))
    finally:
        torch.set_default_dtype(previous)
    states: list[torch.Tensor] = []
    out = SAMPLERS["dpm_fast"](denoise, x_T.clone(), sigmas, generator=torch.Generator().manual_seed(5),
                               callback=lambda s: states.append(s["x"]), eta=eta)
    torch.testing.assert_close(states[-1], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out, denoise(states[-1], torch.full((64,), float(sigmas[-2]), dtype=torch.float64)))
    _, nfe = generate(mixture_denoiser, scheduler, SamplerSpec("dpm_fast", steps=steps), n=2, shape=(2,))
    assert nfe == steps + 1


@pytest.mark.parametrize("order", [2])
def test_dpmpp_2m_sde_heun_matches_diffusers(order):
    """DPMSolverMultistepScheduler(sde-dpmsolver++, solver_type="heun") with the toy eps-model, on its own grid."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is a reference implementation")
    ref = diffusers.DPMSolverMultistepScheduler(**DIFFUSERS_BETAS, algorithm_type="sde-dpmsolver++", solver_order=order,
                                                solver_type="heun", lower_order_final=True)
    z, want = diffusers_vp_loop(ref, 12, seed=4)
    got = difflab_vp_run("dpmpp_2m_sde_heun", z, ref.sigmas.double(), seed=4)
    torch.testing.assert_close(got, want, atol=3e-4, rtol=1e-4)


def test_restart_without_restarts_is_heun_and_counts_its_evaluations():
    scheduler = DiscreteVPScheduler()
    sigmas = scheduler.inference_sigmas(20)
    x_T = _start(sigmas)
    torch.testing.assert_close(SAMPLERS["restart"](mixture_denoiser, x_T, sigmas, restart_times=0),
                               SAMPLERS["heun"](mixture_denoiser, x_T, sigmas), rtol=0, atol=0)
    for knobs, nfe in (({}, 2 * 20 - 1 + 2 * 9), ({"restart_times": 2, "restart_steps": 4}, 2 * 20 - 1 + 2 * 2 * 4)):
        _, got = generate(mixture_denoiser, scheduler, SamplerSpec("restart", steps=20, **knobs), n=2, shape=(2,))
        assert got == nfe, (knobs, got)


class _Basis(StackedGenerator):
    """The k-th draw is 1 in row k (rows are then the output's noise coefficients, as in test_oracle_grid.py)."""

    def __init__(self) -> None:
        self.draws = 0

    def randn(self, shape, dtype=torch.float32):
        self.draws += 1
        z = torch.zeros(tuple(shape), dtype=dtype)
        z[self.draws] = 1.0
        return z


@pytest.mark.parametrize("times", [1, 2])
def test_restart_adds_forward_noise_between_the_grid_levels_nearest_its_interval(times):
    """Algorithm 1 with D = 0 (a point mass at 0), where Heun's steps are exact (x proportional to sigma) and the
    grid ends at sigma_min without the final 0: restart k of K adds noise of variance s_hi^2 - s_lo^2 at s_hi, which
    its own solve and every later one scale by s_lo / s_hi, and the rest of the grid by s_min / s_lo."""
    sigmas = EDMScheduler().inference_sigmas(20)[:-1]  # Karras 80 -> 0.002
    lo, hi = int((sigmas - 0.1).abs().argmin()), int((sigmas - 2.0).abs().argmin())
    s_lo, s_hi, s_min = float(sigmas[lo]), float(sigmas[hi]), float(sigmas[-1])
    zero = lambda x, sigma, cond=None: torch.zeros_like(x)  # noqa: E731
    x = SAMPLERS["restart"](zero, torch.zeros(times + 1, 1), sigmas, generator=_Basis(), restart_times=times)
    shrink = [(s_lo / s_hi) ** (2 * (times - k + 1)) for k in range(1, times + 1)]
    want = sum((s_hi**2 - s_lo**2) * f for f in shrink) * (s_min / s_lo) ** 2
    assert 0 < lo - hi < len(sigmas) - 1 and math.isclose(float((x.double() ** 2).sum()), want, rel_tol=1e-5), (x, want)


def test_restart_refuses_an_interval_that_snaps_to_one_level():
    sigmas = torch.tensor([80.0, 0.5, 0.0], dtype=torch.float64)  # 0.5 is nearest both 0.1 and 2
    with pytest.raises(ConfigError, match="`sampler.restart_max`.*one level"):
        SAMPLERS["restart"](mixture_denoiser, torch.zeros(2, 2), sigmas)
    with pytest.raises(ConfigError, match="`sampler.restart_times`"):
        SAMPLERS["restart"](mixture_denoiser, torch.zeros(2, 2), sigmas, restart_times=-1)


def test_dpm_adaptive_and_k_diffusions_reach_the_same_answer_at_tight_tolerances():
    """k-diffusion's "DPM adaptive" is another algorithm (noise-prediction DPM-Solver-23, a PID controller, its error
    on the sigma-view samples): no step-by-step reference. Both solve the same ODE: at rtol 1e-4 both are within
    1e-3 of RK45 (rtol 1e-7) on the mixture, over DDPM's range (sigma 157 -> 0.01). Measured: difflab 2e-4,
    k-diffusion 2e-4 mean |error|."""
    K = k_diffusion().sampling
    scheduler = DiscreteVPScheduler(grid="karras")
    sigmas = scheduler.inference_sigmas(10)
    x_T = _start(sigmas)
    exact = SAMPLERS["ode"](mixture_denoiser, x_T, sigmas, rtol=1e-7, atol=1e-7)
    ours = SAMPLERS["dpm_adaptive"](mixture_denoiser, x_T, sigmas, rtol=1e-4, atol=1e-5)
    theirs = K.sample_dpm_adaptive(_k_denoiser, x_T.clone(), float(sigmas[-2]), float(sigmas[0]), rtol=1e-4, atol=1e-5,
                                   disable=True)
    theirs = mixture_denoiser(theirs, torch.full((64,), float(sigmas[-2]), dtype=torch.float64))
    errors = [(x - exact).abs().mean().item() for x in (ours, theirs)]
    assert max(errors) < 1e-3, errors
