"""Sigma grids: log-SNR-uniform on every scheduler, and the optimized grid fitted to a model (exact mixture denoiser)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler, EDMScheduler, VEScheduler
from difflab.diffusion.sde import VPSDEScheduler
from difflab.errors import ConfigError
from difflab.samplers import SAMPLERS, SamplerSpec, generate
from difflab.samplers.grids import FittedGrid, cached_optimized_grid, optimize_grid, shifted_denoiser
from oracles import mixture_denoiser

generate_module = importlib.import_module("difflab.samplers.generate")
grids_module = importlib.import_module("difflab.samplers.grids")


@pytest.mark.parametrize("scheduler", [DiscreteVPScheduler(grid="logsnr"), EDMScheduler(grid="logsnr"),
                                       VEScheduler(grid="logsnr"), VPSDEScheduler(grid="logsnr")])
def test_logsnr_grid_is_uniform_in_log_snr(scheduler):
    sigmas = scheduler.inference_sigmas(12)
    log_snr = -2 * sigmas[:-1].log()
    assert sigmas[-1] == 0 and len(sigmas) == 13
    torch.testing.assert_close(log_snr.diff(), log_snr.diff()[:1].expand(11))
    assert sigmas[0].item() == pytest.approx(scheduler.sigma_max) and sigmas[-2].item() == pytest.approx(scheduler.sigma_min)


def test_optimized_grid_needs_a_model_and_a_deterministic_sampler():
    with pytest.raises(ValueError, match="grid=optimized depends on the model"):
        DiscreteVPScheduler(grid="optimized").inference_sigmas(10)
    with pytest.raises(ValueError, match="deterministic sampler"):
        generate(mixture_denoiser, DiscreteVPScheduler(grid="optimized"), SamplerSpec("euler_a", steps=5), n=2,
                 shape=(2,))
    with pytest.raises(ValueError, match="unknown sigma grid 'optimised'"):
        DiscreteVPScheduler(grid="optimised")


def _rms_error(name: str, sigmas: torch.Tensor, z: torch.Tensor, reference: torch.Tensor, sched) -> float:
    x = SAMPLERS[name](mixture_denoiser, z * sched.prior_std(float(sigmas[0])), sigmas)
    return ((x - reference) ** 2).sum(1).mean().sqrt().item()


def _held_out(sched, n=1000):
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(9))
    sigmas_ref = sched.with_grid("logsnr").inference_sigmas(200)
    return z, SAMPLERS["unipc"](mixture_denoiser, z * sched.prior_std(float(sigmas_ref[0])), sigmas_ref)


def test_optimized_grid_beats_every_fixed_grid_on_held_out_samples():
    """DPM-Solver++(2M), 5 steps: fitted on 128 starting points, measured on 1000 others against a fine UniPC solve.

    Measured (RMS error): leading 1.49, trailing 0.39, linspace 1.53, karras 0.90, logsnr 0.65; the best starting
    grid 0.39 (trailing), optimized levels alone (60 sampler runs of the joint search) 0.28."""
    name, sched = "dpmpp_2m", DiscreteVPScheduler(grid="optimized")
    fitted = optimize_grid(mixture_denoiser, sched, name, 5, {}, (2,), n=128, seed=0, max_evals=60, query_evals=0,
                           reference_steps=100)
    assert torch.equal(fitted.queries, fitted.sigmas[:-1])  # no query search: asked at the levels themselves
    z, reference = _held_out(sched)
    errors = {}
    for grid in ("leading", "trailing", "linspace", "karras", "logsnr"):
        errors[grid] = _rms_error(name, sched.with_grid(grid).inference_sigmas(5), z, reference, sched)
    errors["optimized"] = _rms_error(name, fitted.sigmas, z, reference, sched)
    start = optimize_grid(mixture_denoiser, sched, name, 5, {}, (2,), n=128, seed=0, max_evals=0, query_evals=0,
                          reference_steps=100)
    errors["best start"] = _rms_error(name, start.sigmas, z, reference, sched)
    assert errors["optimized"] < 0.85 * errors["best start"], errors  # the joint search itself pays
    assert errors["optimized"] < 0.9 * min(v for k, v in errors.items() if k != "optimized"), errors
    assert errors["optimized"] < 0.3 * errors["leading"], errors  # leading: the default grid of ddpm_linear


def test_fitted_query_levels_lower_the_held_out_error_further():
    """UniPC, 5 steps, fitted on 1024 points, measured on 1000 others. Measured (RMS error): levels alone (120 runs)
    0.26, then levels and query levels jointly (600 runs) 0.17; the largest shift is the last level's (about -0.45 in
    log sigma: the final denoising step asks at a lower level). Fitted on 256 points the gain does not hold out
    (the error is carried by the few samples near the modes' boundaries)."""
    sched = DiscreteVPScheduler(grid="optimized")
    kw = dict(n=1024, seed=0, max_evals=120, reference_steps=100)
    alone = optimize_grid(mixture_denoiser, sched, "unipc", 5, {}, (2,), query_evals=0, **kw)
    shifted = optimize_grid(mixture_denoiser, sched, "unipc", 5, {}, (2,), query_evals=600, **kw)
    z, reference = _held_out(sched)

    def error(fitted: FittedGrid) -> float:
        x = SAMPLERS["unipc"](fitted.denoiser(mixture_denoiser), z * sched.prior_std(float(fitted.sigmas[0])),
                              fitted.sigmas)
        return ((x - reference) ** 2).sum(1).mean().sqrt().item()

    shifts = (shifted.queries / shifted.sigmas[:-1]).log()
    print(f"held-out RMS error: levels {error(alone):.3f}, levels and queries {error(shifted):.3f}, shifts {shifts}")
    assert error(shifted) < 0.75 * error(alone), (error(shifted), error(alone))
    assert shifts.abs().max() > 0.01 and shifts.abs().max() < 2, shifts
    assert (shifted.queries >= sched.sigma_min - 1e-9).all() and (shifted.queries <= sched.sigma_max + 1e-9).all()


def test_shifted_denoiser_asks_at_the_fitted_levels_and_interpolates_between_them():
    asked = []

    def record(x, sigma, cond=None):
        asked.append(sigma.clone())
        return x

    levels = torch.tensor([8.0, 2.0, 0.5], dtype=torch.float64)
    queries = levels * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64).exp()
    fn = shifted_denoiser(record, levels, queries)
    x = torch.zeros(3, 2)
    for s in (8.0, 2.0, 0.5, 4.0, 100.0, 0.0):
        fn(x, torch.full((3,), s, dtype=torch.float64))
    got = [float(a[0]) for a in asked]
    assert got[:3] == pytest.approx(queries.tolist())
    assert got[3] == pytest.approx(4.0 * torch.tensor(1.5).exp().item())  # halfway in log sigma: halfway in shift
    assert got[4] == pytest.approx(100.0 * torch.tensor(2.0).exp().item()) and got[5] == 0.0  # constant beyond; 0 kept
    assert shifted_denoiser(record, levels, levels.clone()) is record  # no shift: the denoiser itself


def test_generate_fits_the_grid_with_the_samplers_clipping_and_samples_at_its_queries(tmp_path, monkeypatch):
    """The grid is fitted to the denoiser as generate runs it (x0_hat clamped here), and sampling asks the network at
    the fitted query levels."""
    seen = {}
    levels = torch.tensor([40.0, 3.0, 0.4, 0.0], dtype=torch.float64)
    queries = torch.tensor([30.0, 3.5, 0.3], dtype=torch.float64)

    def fake_fit(cache, denoise_fn, *args, **kwargs):
        seen["fit_output"] = denoise_fn(torch.full((2, 2), 50.0), torch.full((2,), 1.0, dtype=torch.float64))
        asked.clear()
        return FittedGrid(levels, queries)

    asked: list[float] = []

    def denoiser(x, sigma, cond=None):
        asked.append(float(sigma.flatten()[0]))
        return x * 10

    monkeypatch.setattr(generate_module, "cached_optimized_grid", fake_fit)
    spec = SamplerSpec("dpmpp_2m", steps=3, clip_denoised=True)
    x, nfe = generate(denoiser, DiscreteVPScheduler(grid="optimized"), spec, n=2, shape=(2,), grid_cache=tmp_path)
    assert seen["fit_output"].abs().max() == 1.0  # clamped to [-1, 1] as the sampler's own calls are
    assert nfe == 3 and asked == pytest.approx(queries.tolist())


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        return mixture_denoiser(x, sigma, cond)


def test_optimized_grid_is_cached_per_sampler_and_steps(tmp_path):
    sched = DiscreteVPScheduler(grid="optimized")
    d = Counting()
    first = cached_optimized_grid(tmp_path, d, sched, "dpmpp_2m", 4, {}, (2,), n=32, max_evals=10, reference_steps=50)
    assert d.calls > 0 and (tmp_path / "dpmpp_2m-4.json").is_file()
    d.calls = 0
    again = cached_optimized_grid(tmp_path, d, sched, "dpmpp_2m", 4, {}, (2,), n=32, max_evals=10, reference_steps=50)
    assert d.calls == 0 and torch.equal(first.sigmas, again.sigmas) and torch.equal(first.queries, again.queries)
    stored = json.loads((tmp_path / "dpmpp_2m-4.json").read_text())
    stored["key"]["scheduler"] = "another schedule"
    (tmp_path / "dpmpp_2m-4.json").write_text(json.dumps(stored))
    cached_optimized_grid(tmp_path, d, sched, "dpmpp_2m", 4, {}, (2,), n=32, max_evals=10, reference_steps=50)
    assert d.calls > 0  # a stale entry is recomputed, not trusted
    d.calls = 0
    cached_optimized_grid(tmp_path, d, sched, "dpmpp_2m", 4, {}, (2,), n=32, max_evals=12, reference_steps=50)
    assert d.calls > 0  # fitted with another budget: refitted
    x, nfe = generate(mixture_denoiser, sched, SamplerSpec("dpmpp_2m", steps=4), n=3, shape=(2,), grid_cache=tmp_path)
    assert nfe == 4 and torch.isfinite(x).all()


def test_grid_effort_scales_the_search_and_is_checked(monkeypatch):
    budgets = []

    def fake_fit(cache, denoise_fn, scheduler, sampler, steps, knobs, shape, **kwargs):
        budgets.append((kwargs["max_evals"], kwargs["query_evals"]))
        return FittedGrid.unshifted(DiscreteVPScheduler(grid="logsnr").inference_sigmas(steps))

    monkeypatch.setattr(generate_module, "cached_optimized_grid", fake_fit)
    for effort in (1, 2.5):
        generate(mixture_denoiser, DiscreteVPScheduler(grid="optimized"), SamplerSpec("unipc", 4, grid_effort=effort),
                 n=2, shape=(2,))
    assert budgets == [(100, 180), (250, 450)]  # 20 (N + 1) and 20 (2 N + 1) runs, times the effort
    with pytest.raises(ConfigError, match="sampler.grid_effort"):
        SamplerSpec("unipc", 4, grid_effort=0)


def test_grid_distance_measures_the_fit_in_the_embedding():
    """`embed` is applied to the reference and to every run, and the fit minimises the error there: fitted in the
    first coordinate alone, the grid beats every starting grid in that coordinate, and differs from the grid fitted
    in both."""
    sched, shapes = DiscreteVPScheduler(grid="optimized"), []

    def first(x):
        shapes.append(tuple(x.shape))
        return x[:, :1]

    kw = dict(n=256, seed=0, max_evals=40, query_evals=0, reference_steps=100)
    in_first = optimize_grid(mixture_denoiser, sched, "dpmpp_2m", 5, {}, (2,), embed=first, **kw)
    assert len(shapes) > 40 and set(shapes) == {(256, 2)}
    in_both = optimize_grid(mixture_denoiser, sched, "dpmpp_2m", 5, {}, (2,), **kw)
    assert not torch.equal(in_first.sigmas, in_both.sigmas)
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    sigmas_ref = sched.with_grid("logsnr").inference_sigmas(100)
    x_ref = SAMPLERS["unipc"](mixture_denoiser, z * sched.prior_std(float(sigmas_ref[0])), sigmas_ref, order=3)

    def first_error(sigmas):
        x = SAMPLERS["dpmpp_2m"](mixture_denoiser, z * sched.prior_std(float(sigmas[0])), sigmas)
        return float(((x - x_ref)[:, 0] ** 2).mean())

    starts = [torch.cat([ls.exp(), ls.new_zeros(1)]) for ls in grids_module._starting_grids(sched, 5)]
    assert first_error(in_first.sigmas) < 0.95 * min(first_error(s) for s in starts)


def test_grid_distance_is_checked_and_keys_the_cache(tmp_path, monkeypatch):
    from difflab.metrics.inception import grid_embed
    from difflab.utils.weights import MetricWeightsError

    with pytest.raises(ConfigError, match="sampler.grid_distance"):
        SamplerSpec("unipc", 4, grid_distance="lpips")
    with pytest.raises(ConfigError, match="latent"):
        SamplerSpec("unipc", 4, grid="optimized", grid_distance="inception").resolve(pixel_space=False)
    with pytest.raises(ConfigError, match="latent"):  # the optimized grid may be the scheduler's own
        SamplerSpec("unipc", 4, grid_distance="inception").resolve(pixel_space=False)
    with pytest.raises(ConfigError, match="1- or 3-channel images"):
        grid_embed(SamplerSpec("unipc", 4, grid_distance="inception"), (2,), torch.device("cpu"))
    with pytest.raises(MetricWeightsError, match="sampler.grid_inception"):
        grid_embed(SamplerSpec("unipc", 2, grid_distance="inception", grid_inception=str(tmp_path / "nope.pth")),
                   (1, 8, 8), torch.device("cpu"))
    assert grid_embed(SamplerSpec("unipc", 4), (2,), torch.device("cpu")) is None  # pixels: no features
    with pytest.raises(ValueError, match="embed"):  # the samplers' layer never builds a metric network itself
        generate(lambda x, s, c=None: x * 0, DiscreteVPScheduler(grid="optimized"),
                 SamplerSpec("unipc", 2, grid_distance="inception"), n=1, shape=(1, 8, 8))
    d = Counting()
    sched = DiscreteVPScheduler(grid="optimized")
    cached_optimized_grid(tmp_path, d, sched, "dpmpp_2m", 4, {}, (2,), n=32, max_evals=10, reference_steps=50)
    d.calls = 0
    cached_optimized_grid(tmp_path, d, sched, "dpmpp_2m", 4, {}, (2,), n=32, max_evals=10, reference_steps=50,
                          distance="first", embed=lambda x: x[:, :1])
    assert d.calls > 0 and (tmp_path / "dpmpp_2m-4-first.json").is_file()  # another distance: its own fit
    assert json.loads((tmp_path / "dpmpp_2m-4-first.json").read_text())["key"]["fit"]["distance"] == "first"


def test_inception_grid_distance_uses_the_fid_features(tmp_path, monkeypatch):
    """generate fits with the FID Inception pool features of the clamped samples (the shared weights file)."""
    from pathlib import Path

    from difflab.metrics.inception import InceptionFeatures, grid_embed

    weights = Path(__file__).resolve().parents[3].parent / "shared" / "assets" / "inception" / "inception_fid_trunk.pth"
    if not weights.is_file():
        pytest.skip(f"needs the shared Inception weights at {weights}")
    seen = {}

    def fake_fit(cache, denoise_fn, scheduler, sampler, steps, knobs, shape, **kwargs):
        seen.update(kwargs)
        return FittedGrid.unshifted(DiscreteVPScheduler(grid="logsnr").inference_sigmas(steps))

    monkeypatch.setattr(generate_module, "cached_optimized_grid", fake_fit)
    spec = SamplerSpec("unipc", 2, grid_distance="inception", grid_inception=str(weights))
    generate(lambda x, s, c=None: x * 0, DiscreteVPScheduler(grid="optimized"), spec, n=1, shape=(1, 8, 8),
             embed=grid_embed(spec, (1, 8, 8), torch.device("cpu")))
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.5
    expected = InceptionFeatures(str(weights), download=False).eval()(x.clamp(-1, 1))[0]
    assert seen["distance"] == "inception"
    torch.testing.assert_close(seen["embed"](x), expected)
    assert seen["embed"](x).shape == (3, 2048)


def test_record_names_the_grid_settings_a_user_set():
    """samples.json / metrics.json say which grid produced the samples, and compare's labels tell them apart."""
    from difflab.compare.table import sampler_labels

    assert SamplerSpec("unipc", 10).record() == {"name": "unipc", "steps": 10, "clip_denoised": False}
    fitted = SamplerSpec("unipc", 10, grid="optimized", grid_effort=4, grid_distance="inception").record()
    assert (fitted["grid"], fitted["grid_effort"], fitted["grid_distance"]) == ("optimized", 4.0, "inception")
    assert SamplerSpec("DPM++ 2M Karras", 10).record()["grid"] == "karras"  # the web UI name's grid
    records = [{"sampler": SamplerSpec("unipc", 10, grid=g).record()} for g in ("karras", "optimized")]
    assert sampler_labels(records) == ["unipc grid=karras", "unipc grid=optimized"]
