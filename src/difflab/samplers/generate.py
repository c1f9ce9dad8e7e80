"""Turning a denoiser into images: sampler choice, sigma grid, per-sample seeds, batching."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.diffusion.conditioning import StepConditions, on_grid
from difflab.diffusion.schedules import Scheduler
from difflab.diffusion.thresholding import threshold
from difflab.errors import ConfigError
from difflab.samplers.aliases import resolve, resolve_grid
from difflab.samplers.base import SAMPLERS, DenoiseFn, StackedGenerator, StepCallback
from difflab.samplers.grids import cached_optimized_grid, search_budget
from difflab.utils.progress import Progress

GRID_DISTANCES = ("pixel", "inception")  # what grid=optimized measures its error in (`grid_embed`)


@dataclass
class SamplerSpec:
    """A sampler by name with its step count and knobs, as composed from `conf/sampler/*.yaml`.

    `name` is a registered sampler or a web UI name ("DPM++ 2M Karras", `aliases.py`), which may bring a grid.
    `grid` (default: the scheduler's own) replaces the scheduler's grid for this sampler: karras, logsnr, ays, ...,
    or a web UI schedule type ("Align Your Steps", `aliases.WEBUI_SCHEDULES`).
    `grid_effort` scales the search budget of `grid=optimized` (1: 20 (steps + 1) + 20 (2 steps + 1) sampler runs on
    64 starting points, `grids.py`); a larger one fits longer, once per checkpoint (cached). `grid_distance` is what
    that fit measures: "pixel" (the default: squared error of the samples) or "inception" (squared distance of their
    FID Inception features: what FID sees; pixel models with 1- or 3-channel images only; the weights from
    `grid_inception`, a path, else the torch hub cache; about 0.1 s per image and run on a CPU thread).
    `steps=None` means the scheduler's full training grid (DDPM's 1000 steps) where it has one.
    `clip_denoised` keeps x0_hat in the data range at every step (see `difflab.diffusion.thresholding`):
    True clamps to [-1, 1] (DDPM's original code does), "dynamic" is Imagen's dynamic thresholding at
    `dynamic_percentile`, "auto" (the configs' default) is True for pixel models and False for latent ones
    (`resolve`), False leaves x0_hat as the network gives it. On the default v-prediction digits model, clamping
    and no clipping give the same FID and no broken samples, while dynamic thresholding costs FID (it rescales
    digits whose strokes sit at +1): benchmarks/results/recipes.md.
    """

    name: str = "ddpm"
    steps: int | None = None
    clip_denoised: bool | str = False
    dynamic_percentile: float = 0.995
    grid: str | None = None
    grid_effort: float = 1.0
    grid_distance: str = "pixel"
    grid_inception: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, name: str = "ddpm", steps: int | None = None, clip_denoised: bool | str = False,
                 grid: str | None = None, dynamic_percentile: float = 0.995, grid_effort: float = 1.0,
                 grid_distance: str = "pixel", grid_inception: str | None = None, **knobs: Any):
        if clip_denoised not in (True, False, "auto", "dynamic"):
            raise ConfigError.bad_value("sampler.clip_denoised", f"{clip_denoised!r} is not a clipping mode",
                                        "Use auto (clip pixel models, not latent ones), true, false or dynamic "
                                        "(Imagen's dynamic thresholding).")
        if not 0.5 <= float(dynamic_percentile) <= 1.0:
            raise ConfigError.bad_value("sampler.dynamic_percentile", f"{dynamic_percentile} is outside [0.5, 1]",
                                        "Imagen uses 0.995.")
        if not 0 < float(grid_effort) <= 1000:
            raise ConfigError.bad_value("sampler.grid_effort", f"{grid_effort} is outside (0, 1000]",
                                        "1 is the default search budget of grid=optimized; 4 searches four times "
                                        "as long.")
        if grid_distance not in GRID_DISTANCES:
            raise ConfigError.bad_value("sampler.grid_distance", f"{grid_distance!r} is not a grid distance",
                                        f"Use one of {list(GRID_DISTANCES)}.")
        self.grid_effort, self.grid_distance, self.grid_inception = float(grid_effort), grid_distance, grid_inception
        self.name, alias_grid = resolve(name)
        self.steps, self.clip_denoised, self.knobs = steps, clip_denoised, dict(knobs)
        self.dynamic_percentile = float(dynamic_percentile)
        self.grid = resolve_grid(grid) if grid is not None else alias_grid  # a web UI schedule name -> its grid
        options = SAMPLERS[self.name].options()
        unknown = [k for k in self.knobs if k not in options]
        if unknown:
            raise ConfigError.bad_value(f"sampler.{unknown[0]}", f"sampler {self.name!r} has no option(s) {unknown}",
                                        f"Its options are {list(options)}.")

    def scheduler_for(self, scheduler: Scheduler) -> Scheduler:
        """The scheduler with this sampler's `grid` (itself when the sampler sets none)."""
        return scheduler if self.grid is None else scheduler.with_grid(self.grid)

    def resolve(self, pixel_space: bool) -> SamplerSpec:
        """This spec with `clip_denoised="auto"` made concrete: clamping to [-1, 1] for pixel models, none in a latent space."""
        if self.grid_distance == "inception" and not pixel_space:  # the grid may come from the scheduler: always
            raise ConfigError.bad_value("sampler.grid_distance", "inception measures images, and this model samples "
                                        "latents", "Use grid_distance=pixel (the latent error) for a latent model.")
        if self.clip_denoised != "auto":
            return self
        concrete = copy.copy(self)  # the same spec, checked once when it was made
        concrete.clip_denoised, concrete.knobs = pixel_space, dict(self.knobs)
        return concrete

    def record(self) -> dict[str, Any]:
        """Name, steps, knobs, the x0 clipping and the grid settings a user set (the grid, a grid_effort or
        grid_distance off their defaults), as written to samples.json / metrics.json."""
        clip = {"clip_denoised": self.clip_denoised}
        if self.clip_denoised == "dynamic":
            clip["dynamic_percentile"] = self.dynamic_percentile
        grid = {"grid": self.grid} if self.grid is not None else {}
        if self.grid_effort != 1.0:
            grid["grid_effort"] = self.grid_effort
        if self.grid_distance != "pixel":
            grid["grid_distance"] = self.grid_distance
        return {"name": self.name, "steps": self.steps, **self.knobs, **clip, **grid}

    @property
    def fn(self) -> Callable[..., Tensor]:
        """The registered sampler function."""
        return SAMPLERS[self.name].fn

    def steps_for(self, scheduler: Scheduler) -> int:
        """The step count: `steps`, else the scheduler's training grid length."""
        steps = self.steps if self.steps is not None else getattr(scheduler, "num_train_timesteps", None)
        if steps is None:
            raise ValueError(f"sampler {self.name!r} needs `sampler.steps` for scheduler {scheduler!r}")
        return int(steps)

    def sigmas(self, scheduler: Scheduler) -> Tensor:
        """The descending noise-level grid for this sampler's step count ([steps + 1], float64)."""
        return self.scheduler_for(scheduler).inference_sigmas(self.steps_for(scheduler))

    def nfe(self, scheduler: Scheduler) -> int:
        """Network evaluations per sample for the grid of this spec (one per step for DDPM/DDIM)."""
        return self.steps_for(scheduler)


class CountingDenoiser:
    """Wraps a denoise_fn to count network evaluations and keep x0_hat in range (False, True or "dynamic")."""

    def __init__(self, denoise_fn: DenoiseFn, clip_denoised: bool | str = False, percentile: float = 0.995) -> None:
        if clip_denoised == "auto":
            raise ValueError("clip_denoised='auto' must be resolved first: SamplerSpec.resolve(pixel_space=...)")
        self.denoise_fn, self.clip, self.percentile, self.calls = denoise_fn, clip_denoised, percentile, 0

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        self.calls += 1
        return threshold(self.denoise_fn(x, sigma, cond), self.clip, self.percentile)


_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_U64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea & Flood 2014) on uint64 arrays: a bijection of 64-bit words."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        return z ^ (z >> np.uint64(31))


def sample_seeds(seed: int, n: int, start: int = 0) -> list[int]:
    """Per-image generator seeds: image i of a run seeded `seed` uses the top 32 bits of
    SplitMix64(SplitMix64(seed) xor i), whatever the batching.

    A hash, not an affine map: two distinct (seed, i) pairs share a generator seed only at the chance rate of
    32-bit values (torch's CPU generator keeps the low 32 bits of a seed, so the seeds are 32-bit).
    `seed` is any integer in [0, 2^64).
    """
    if not 0 <= int(seed) <= _U64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    key = _splitmix64(np.array([int(seed)], dtype=np.uint64))
    index = np.arange(start, start + n, dtype=np.uint64)
    return (_splitmix64(key ^ index) >> np.uint64(32)).astype(np.int64).tolist()


@dataclass
class Edit:
    """Starting points other than pure noise (all tensors [n, C, H, W], indexed like the images).

    - `noise`: the standard-normal x_T of each image (e.g. slerp-interpolated noises) instead of its seed's.
    - `init` + `strength` (SDEdit, Meng et al. 2022): start at grid position round(steps * (1 - strength)),
      from x = init + sigma_start * eps; strength 1 starts at sigma_max, strength -> 0 returns `init`.
    - `mask` (1 = keep `init`, 0 = generate; needs `init`): inpainting by replacement in x0 space: every
      D(x, sigma) takes `init` where mask = 1, so every sampler pulls the known pixels towards `init`,
      and the result holds exactly `init` there.
    """

    noise: Tensor | None = None
    init: Tensor | None = None
    strength: float = 1.0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if self.mask is not None and self.init is None:
            raise ValueError("inpainting needs the image (`init`) that the mask refers to")

    def grid(self, sigmas: Tensor) -> Tensor:
        """The part of the descending grid this edit runs (all of it without `init`)."""
        if self.init is None:
            return sigmas
        steps = len(sigmas) - 1
        return sigmas[int(round(steps * (1.0 - self.strength))) :]

    def rows(self, start: int, b: int, device: torch.device) -> Edit:
        take = lambda t: None if t is None else t[start : start + b].to(device)  # noqa: E731
        return Edit(take(self.noise), take(self.init), self.strength, take(self.mask))


def _start(edit: Edit | None, gen: StackedGenerator, shape: tuple[int, ...], sigma0: float, prior_std: float) -> Tensor:
    if edit is not None and edit.init is not None:
        return edit.init.float() + sigma0 * gen.randn(tuple(edit.init.shape))
    if edit is not None and edit.noise is not None:
        return edit.noise.float() * prior_std
    return gen.randn(shape) * prior_std


def _masked(denoise_fn: DenoiseFn, init: Tensor, mask: Tensor) -> DenoiseFn:
    def fn(x: Tensor, sigma: Tensor, cond: Any = None) -> Tensor:
        return mask * init + (1 - mask) * denoise_fn(x, sigma, cond)

    return fn


@torch.no_grad()
def generate(
    denoise_fn: DenoiseFn,
    scheduler: Scheduler,
    spec: SamplerSpec,
    *,
    n: int,
    shape: tuple[int, ...],
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    cond: Any = None,
    callback: StepCallback | None = None,
    first_index: int = 0,
    edit: Edit | None = None,
    grid_cache: Path | None = None,
    progress: Progress | None = None,
    embed: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, int]:
    """Sample n images of `shape` (C, H, W); returns (x0 [n, C, H, W] float32 on CPU, NFE per image).

    The images are numbers first_index .. first_index + n - 1 of the run: image i depends only on
    (seed, i), so batch size and device count (each rank taking its own range) do not change it.
    `edit` starts from given noises or images instead (img2img, inpainting, interpolation). With the scheduler's
    `grid=optimized` the grid and its query levels are fitted to this denoiser (with the spec's x0 clipping) and
    sampler first (`grids.py`), cached in `grid_cache`; with `grid_distance=inception` its error is measured in the
    features `embed` gives (`difflab.metrics.inception.grid_embed`).
    `progress` counts the images (a share of the batch after every sampler step) and shows the NFE.
    A `cond` (or a guided denoiser's negative condition) that changes with the step (prompt editing, `[a|b]`) is bound
    here to the grid the sampler runs: fractions of the run count its steps, img2img's included.
    """
    device = torch.device(device)
    sched = spec.scheduler_for(scheduler)
    if sched.grid == "optimized" and any(isinstance(c, StepConditions) for c in (cond, getattr(denoise_fn, "null", None))):
        raise ConfigError.bad_value("sampler.grid", "optimized fits the grid to a path of fixed conditions, and the "
                                    "prompt changes with the step ([from:to:when] or [a|b])",
                                    "Use another grid (karras, logsnr, ...) or a prompt without editing.")
    if sched.grid == "optimized":  # fitted to the denoiser as it samples: with this spec's x0 clipping
        if spec.grid_distance != "pixel" and embed is None:
            raise ValueError(f"grid_distance={spec.grid_distance} needs the features it measures in: pass `embed` "
                             "(difflab.metrics.inception.grid_embed)")
        c = None if cond is None else cond[:64].to(device)
        fitted = cached_optimized_grid(grid_cache, CountingDenoiser(denoise_fn, spec.clip_denoised,
                                                                    spec.dynamic_percentile),
                                       sched, spec.name, spec.steps_for(scheduler), spec.knobs, shape,
                                       n=64 if cond is None else len(c), cond=c, device=device,
                                       distance=spec.grid_distance, embed=embed,
                                       **search_budget(spec.steps_for(scheduler), spec.grid_effort))
        full, denoise_fn = fitted.sigmas, fitted.denoiser(denoise_fn)
    else:
        full = spec.sigmas(scheduler)
    sigmas = full if edit is None else edit.grid(full)
    batch_size = batch_size or n
    denoise_fn = on_grid(denoise_fn, sigmas)  # e.g. a negative prompt with [from:to:when]
    counter = CountingDenoiser(denoise_fn, spec.clip_denoised, spec.dynamic_percentile)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        gen = StackedGenerator(sample_seeds(seed, b, first_index + start), device)
        part = edit.rows(start, b, device) if edit is not None else None
        x_T = _start(part, gen, (b, *shape), float(sigmas[0]), scheduler.prior_std(float(sigmas[0])))
        fn = counter if part is None or part.mask is None else _masked(counter, part.init.float(), part.mask.float())
        c = None if cond is None else on_grid(cond[start : start + b].to(device), sigmas)
        step = callback if progress is None else _progress_callback(progress, callback, counter, b, len(sigmas) - 1)
        x0 = spec.fn(fn, x_T, sigmas, cond=c, generator=gen, callback=step, **spec.knobs)
        if progress is not None:
            step({"final": True})
        if part is not None and part.mask is not None:
            x0 = part.mask * part.init.float() + (1 - part.mask) * x0
        out.append(x0.float().cpu())
    nfe = counter.calls // max(1, -(-n // batch_size))
    return torch.cat(out), nfe


def _progress_callback(progress: Progress, callback: StepCallback | None, counter: CountingDenoiser, b: int,
                       steps: int) -> StepCallback:
    """A step callback that moves `progress` through this batch of `b` images ((i + 1) / steps of it after step i,
    all of it after the last) with the NFE so far, then calls `callback` (not for the closing call) with the count
    added to its info: `done` and `total` images."""
    base, calls = progress.done, counter.calls

    def step(info: dict[str, Any]) -> None:
        share = 1.0 if info.get("final") else min(1.0, (int(info["i"]) + 1) / max(1, steps))
        progress.set(base + b * share, NFE=counter.calls - calls)
        if callback is not None and not info.get("final"):
            callback({**info, "done": progress.done, "total": progress.total})

    return step


def is_deterministic(spec: SamplerSpec) -> bool:
    """Whether the sampler maps noise to image deterministically, as its registration declares (`SamplerInfo`)."""
    return SAMPLERS[spec.name].is_deterministic(spec.knobs)


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between two noises (Shoemake 1985), one row per t: [len(t), *z0.shape]."""
    a, b = z0.flatten().double(), z1.flatten().double()
    theta = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1))
    t = t.double().reshape(-1, 1)
    if theta.abs() < 1e-6:
        mix = (1 - t) * a + t * b
    else:
        mix = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
    return mix.reshape(len(t), *z0.shape).to(z0.dtype)
