"""Samplers against oracles: point masses, Gaussian data with the exact denoiser, and diffusers' loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import ToyEpsNet
from difflab.diffusion import Denoiser, DiscreteVPScheduler
from difflab.samplers import SAMPLERS, SamplerSpec, StackedGenerator, generate

SD = 0.5  # data std of the Gaussian oracle


def gaussian_denoiser(x, sigma, cond=None):
    """Exact E[x0 | x] for x0 ~ N(0, SD^2): x * SD^2 / (SD^2 + sigma^2)."""
    s = sigma.float().reshape(-1, *([1] * (x.ndim - 1)))
    return x * SD**2 / (SD**2 + s**2)


@pytest.mark.parametrize("name,knobs", [("ddpm", {}), ("ddpm", {"variance": "large"}), ("ddim", {}), ("ddim", {"eta": 1.0})])
def test_point_mass_is_sampled_exactly(name, knobs):
    c = torch.tensor([0.3, -0.7]).reshape(1, 2, 1, 1)
    const = lambda x, sigma, cond=None: c.expand_as(x)  # noqa: E731  exact denoiser of a point mass
    x, _ = generate(const, DiscreteVPScheduler(), SamplerSpec(name, steps=20, **knobs), n=8, shape=(2, 3, 3), seed=1)
    assert torch.allclose(x, c.expand_as(x), atol=1e-6)


@pytest.mark.parametrize("name,steps,knobs,tol", [
    ("ddim", 1000, {}, 0.01),             # deterministic, converges to the probability-flow ODE
    ("ddim", 1000, {"eta": 1.0}, 0.02),
    ("ddpm", 1000, {}, 0.02),             # mean-only posterior: slightly under-dispersed at T = 1000
    ("ddpm", 1000, {"variance": "large"}, 0.02),
])
def test_gaussian_data_std_is_recovered(name, steps, knobs, tol):
    s = DiscreteVPScheduler()
    sig = s.inference_sigmas(steps)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4000, 1, 2, 2, generator=g) * s.prior_std(float(sig[0]))
    x = SAMPLERS[name](gaussian_denoiser, x_T, sig, generator=g, **knobs)
    assert abs(x.std().item() - SD) < tol * SD + 3 * SD / (2 * x.numel()) ** 0.5
    assert abs(x.mean().item()) < 4 * SD / x.numel() ** 0.5


def test_ddim_error_shrinks_with_steps():
    errs = []
    for steps in (10, 50, 250):
        x, _ = generate(gaussian_denoiser, DiscreteVPScheduler(), SamplerSpec("ddim", steps=steps), n=2000, shape=(4,), seed=0)
        errs.append(abs(x.std().item() - SD))
    assert errs[0] > errs[1] > errs[2]


def test_ddim_eta0_is_deterministic_given_x_T():
    s = DiscreteVPScheduler()
    sig = s.inference_sigmas(25)
    x_T = torch.randn(4, 1, 4, 4) * s.prior_std(float(sig[0]))
    a = SAMPLERS["ddim"](gaussian_denoiser, x_T, sig, generator=torch.Generator().manual_seed(0))
    b = SAMPLERS["ddim"](gaussian_denoiser, x_T, sig, generator=torch.Generator().manual_seed(123))
    assert torch.equal(a, b)


def test_ddim_eta1_equals_ddpm_small_variance():
    s = DiscreteVPScheduler()
    a, _ = generate(gaussian_denoiser, s, SamplerSpec("ddim", steps=30, eta=1.0), n=6, shape=(3,), seed=5)
    b, _ = generate(gaussian_denoiser, s, SamplerSpec("ddpm", steps=30), n=6, shape=(3,), seed=5)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_same_seed_same_images_whatever_the_batch_size(name):
    spec = SamplerSpec(name, steps=10, **({"eta": 0.5} if name == "ddim" else {}))
    a, _ = generate(gaussian_denoiser, DiscreteVPScheduler(), spec, n=7, shape=(1, 3, 3), seed=11, batch_size=7)
    b, _ = generate(gaussian_denoiser, DiscreteVPScheduler(), spec, n=7, shape=(1, 3, 3), seed=11, batch_size=2)
    c, _ = generate(gaussian_denoiser, DiscreteVPScheduler(), spec, n=7, shape=(1, 3, 3), seed=12, batch_size=7)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_unknown_sampler_and_option_are_clear():
    from difflab.errors import ConfigError

    with pytest.raises(ConfigError, match="`sampler`: unknown sampler .dpm_9000.*samplers: ddim, ddpm.*web UI names: .*DPM\\+\\+ 2M Karras"):
        SamplerSpec("dpm_9000")
    with pytest.raises(ConfigError, match="has no option"):
        SamplerSpec("ddim", etta=0.0)
    with pytest.raises(ValueError, match="variance"):
        generate(gaussian_denoiser, DiscreteVPScheduler(), SamplerSpec("ddpm", steps=2, variance="medium"), n=1, shape=(1,))


def test_stacked_generator_rows_are_independent_of_batch():
    g1 = StackedGenerator([1, 2, 3])
    g2 = StackedGenerator([2])
    assert torch.equal(g1.randn((3, 5))[1], g2.randn((1, 5))[0])


# ---- golden comparison with diffusers' own sampling loops --------------------------------------

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the reference implementation")


def _diffusers_loop(scheduler, steps, x_shape, seed, **step_kwargs):
    net = ToyEpsNet()
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = net(x, torch.full((x_shape[0],), float(t)))
        x = scheduler.step(eps, t, x, generator=g, **step_kwargs).prev_sample
    return x


def _difflab_loop(name, steps, x_shape, seed, **knobs):
    s = DiscreteVPScheduler()
    sig = s.inference_sigmas(steps)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(x_shape, generator=g) * s.prior_std(float(sig[0]))
    return SAMPLERS[name](Denoiser(ToyEpsNet(), s), x_T, sig, generator=g, **knobs)


@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_matches_diffusers(steps):
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  clip_sample=False,
                                  variance_type="fixed_small")
    want = _diffusers_loop(ref, steps, (3, 2, 4, 4), seed=0)
    got = _difflab_loop("ddpm", steps, (3, 2, 4, 4), seed=0)
    assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(eta):
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  clip_sample=False,
                                  set_alpha_to_one=True, steps_offset=0)
    want = _diffusers_loop(ref, 50, (3, 2, 4, 4), seed=1, eta=eta)
    got = _difflab_loop("ddim", 50, (3, 2, 4, 4), seed=1, eta=eta)
    assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), (got - want).abs().max()


def test_per_image_seeds_differ_across_run_seeds_and_images():
    from difflab.samplers import sample_seeds

    a, b = sample_seeds(0, 1000), sample_seeds(1, 1000)
    assert len(set(a) | set(b)) == 2000 and all(0 <= s < 2**32 for s in a + b)
    assert sample_seeds(3, 5, start=2) == sample_seeds(3, 7)[2:]


def test_per_image_seeds_are_a_splitmix64_hash_without_the_old_4096_period():
    from difflab.samplers import sample_seeds
    from difflab.samplers.generate import _splitmix64

    # SplitMix64 reference value (Steele, Lea & Flood 2014; Vigna's splitmix64.c): state 1234567 -> 6457827717110365317
    assert int(_splitmix64(np.array([1234567], dtype=np.uint64))[0]) == 6457827717110365317
    key = int(_splitmix64(np.array([7], dtype=np.uint64))[0])
    assert sample_seeds(7, 1, start=5) == [int(_splitmix64(np.array([key ^ 5], dtype=np.uint64))[0]) >> 32]
    # (seed * 2^20 + i) mod 2^32 gave seeds 7 and 4103 the same images; a hash collides only at chance rate
    pairs = {s for seed in (7, 4103, 8199, 0, 1, 2**40, 2**63 - 1) for s in sample_seeds(seed, 2000)}
    assert len(pairs) == 7 * 2000
    from difflab.diffusion.toy import three_gaussians

    denoiser, sched = three_gaussians().denoiser, DiscreteVPScheduler(grid="karras")
    x7, _ = generate(denoiser, sched, SamplerSpec("ddim", steps=5), n=3, shape=(2,), seed=7)
    x4103, _ = generate(denoiser, sched, SamplerSpec("ddim", steps=5), n=3, shape=(2,), seed=4103)
    assert not torch.allclose(x7, x4103)
    with pytest.raises(ValueError, match="seed"):
        sample_seeds(-2, 1)
