"""The three distillation recipes: what a training step draws, how many teacher calls it costs, which sampler the
student samples with. The targets themselves are `difflab.diffusion.distillation`; `lit/distill.py` is the
LightningModule that runs a recipe with a teacher checkpoint.

A recipe works on plain denoisers (`D(x, sigma [B], cond)`), so it also trains a toy student on the exact-denoiser
mixture (`difflab.diffusion.toy`) in a loop of a few lines:

    method.setup(scheduler, final_steps, total_steps, teacher_fn, shape, conds)
    for step in range(1, total_steps + 1):
        loss = method.loss(student, teacher_fn, x0, cond, generator).mean()   # then backward, optimizer step
        method.after_step(student, step)                                    # consistency: the EMA target
        if method.stage_done(step):                                         # progressive: the next stage
            method.advance(student)

`teacher_fn` is the teacher's denoiser as its sampler sees it: guided at the distilled scale w and with its x0
clipping (`DistillationModule.teacher_fn`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.denoiser import DenoiseFn
from difflab.diffusion.distillation import (
    DISTANCES,
    SOLVER_ORDERS,
    consistency_loss,
    insert_midpoints,
    progressive_loss,
)
from difflab.diffusion.losses import DiffusionLoss
from difflab.diffusion.precond import Denoiser
from difflab.diffusion.schedules import Scheduler
from difflab.errors import ConfigError
from difflab.samplers.generate import Edit, SamplerSpec, generate, is_deterministic

KEY = "distill"


def _levels(scheduler: Scheduler, steps: int) -> Tensor:
    """The student's sampling grid of `steps` steps ([steps + 1], descending, ending at 0, float64)."""
    return scheduler.inference_sigmas(steps).double()


class DistillationMethod:
    """A recipe (see the module docstring). `teacher_calls` is the teacher's network evaluations per example and
    training step (reflow: per pair, once, before training)."""

    name = "base"
    teacher_calls: float = 0.0
    sampler: tuple[str, dict[str, Any]] = ("euler", {})  # each recipe's student sampler and its fixed options

    def student_sampler(self, steps: int) -> SamplerSpec:
        """The student's default sampler at `steps` steps (x0 clipping resolved by the model: auto)."""
        name, options = self.sampler
        return SamplerSpec(name, steps, clip_denoised="auto", **options)

    def check_steps(self, steps: int) -> None:
        """A ConfigError when the student cannot be trained for `steps` sampling steps."""

    def setup(self, scheduler: Scheduler, final_steps: int, total_steps: int, teacher_fn: DenoiseFn,
              shape: tuple[int, ...], conds: Tensor | None = None, device: torch.device | str = "cpu",
              loss_fn: DiffusionLoss | None = None) -> None:
        """Fix the grids of `scheduler` (the student's, its sampling grid), the budget and what needs the teacher
        before training (reflow's pairs); `conds` are conditions to draw from ([n, ...]; reflow's pairs), `loss_fn`
        the student's denoising loss (reflow)."""
        self.scheduler, self.final_steps, self.total_steps = scheduler, int(final_steps), int(total_steps)
        self.loss_fn = loss_fn or DiffusionLoss()

    def loss(self, student: Denoiser, teacher_fn: DenoiseFn, x0: Tensor, cond: Any, generator: torch.Generator,
             clip: Callable[[Tensor], Tensor] = lambda x: x) -> Tensor:
        """The per-example loss of one training batch ([B]); `clip` is the student's x0 clipping (targets)."""
        raise NotImplementedError

    def after_step(self, student: Denoiser, step: int) -> None:
        """Called after optimizer step `step` (1, 2, ...) with the updated student."""

    def stage_done(self, step: int) -> bool:
        """Whether the stage of the current step count ends after optimizer step `step` (progressive distillation):
        its student is then worth saving before `advance`."""
        return False

    def advance(self, student: Denoiser) -> None:
        """Start the next stage from `student` (progressive distillation)."""

    def steps(self) -> int:
        """The step count the student samples with now (progressive distillation: its current stage's)."""
        return self.final_steps

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the recipe's state (resuming)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any], student: Denoiser) -> None:
        """Restore `state_dict` (its stage teacher built on a copy of `student`)."""


class ConsistencyDistillation(DistillationMethod):
    """Consistency distillation (Song et al. 2023, Algorithm 2; LCM): the student's D becomes the consistency
    function of the teacher's ODE on the discretisation of `intervals` levels of its own sampling grid; the teacher
    takes one `solver` step per example (euler: 1 call, heun: 2); the target network is the student without gradient
    (`target_ema` 0, iCT) or its EMA with that decay (CM, LCM: 0.95); `distance` pseudo_huber (iCT) or l2."""

    name = "consistency"
    sampler = ("lcm", {})

    def __init__(self, intervals: int = 20, solver: str = "heun", distance: str = "pseudo_huber",
                 target_ema: float = 0.95) -> None:
        if int(intervals) < 1:
            raise ConfigError.bad_value(f"{KEY}.consistency.intervals", f"{intervals} must be >= 1",
                                        "Pass e.g. distill.consistency.intervals=20 (a multiple of the steps).")
        if solver not in SOLVER_ORDERS:
            raise ConfigError.bad_value(f"{KEY}.consistency.solver", f"unknown teacher solver {solver!r}",
                                        f"Use one of {', '.join(SOLVER_ORDERS)}.")
        if distance not in DISTANCES:
            raise ConfigError.bad_value(f"{KEY}.consistency.distance", f"unknown distance {distance!r}",
                                        f"Use one of {', '.join(DISTANCES)}.")
        if not 0.0 <= float(target_ema) < 1.0:
            raise ConfigError.bad_value(f"{KEY}.consistency.target_ema", f"{target_ema} is outside [0, 1)",
                                        "0.95 (LCM) averages the target network; 0 uses the student itself (iCT).")
        self.intervals, self.solver, self.distance = int(intervals), solver, distance
        self.target_ema = float(target_ema)
        self.teacher_calls = float(SOLVER_ORDERS[solver])
        self.target: Denoiser | None = None

    def setup(self, scheduler: Scheduler, final_steps: int, total_steps: int, teacher_fn: DenoiseFn,
              shape: tuple[int, ...], conds: Tensor | None = None, device: torch.device | str = "cpu",
              loss_fn: DiffusionLoss | None = None) -> None:
        super().setup(scheduler, final_steps, total_steps, teacher_fn, shape, conds, device, loss_fn)
        self.levels = _levels(scheduler, self.intervals).flip(0).to(device)  # (N + 1,) ascending: 0, sigma_1, ..

    def loss(self, student: Denoiser, teacher_fn: DenoiseFn, x0: Tensor, cond: Any, generator: torch.Generator,
             clip: Callable[[Tensor], Tensor] = lambda x: x) -> Tensor:
        b = x0.shape[0]
        n = torch.randint(0, self.intervals, (b,), generator=generator, device=generator.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)
        if self.target_ema > 0 and self.target is None:
            self.target = copy.deepcopy(student).requires_grad_(False)
        net = self.target if self.target is not None else student
        target = lambda x, s, c=None: clip(net(x, s, c))
        levels = self.levels.to(x0.device)
        return consistency_loss(student, target, teacher_fn, x0, eps, levels[n + 1], levels[n], cond,
                                SOLVER_ORDERS[self.solver], self.distance)

    @torch.no_grad()
    def after_step(self, student: Denoiser, step: int) -> None:
        if self.target is not None:  # CM Algorithm 2: theta^- <- mu theta^- + (1 - mu) theta
            for mine, theirs in zip(self.target.parameters(), student.parameters()):
                mine.lerp_(theirs.detach(), 1.0 - self.target_ema)

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict()} if self.target is not None else {}

    def load_state_dict(self, state: Mapping[str, Any], student: Denoiser) -> None:
        if state.get("target") is not None:
            self.target = copy.deepcopy(student).requires_grad_(False)
            self.target.load_state_dict(state["target"])


class ProgressiveDistillation(DistillationMethod):
    """Progressive distillation (Salimans & Ho 2022, Algorithm 2): from `start_steps` the step count halves each
    stage, down to the student's steps; stage k's teacher is the student of stage k - 1 (first: the teacher), two
    DDIM steps of it per student step (2 calls). The stages share the training steps equally."""

    name = "progressive"
    sampler = ("ddim", {"eta": 0.0})
    teacher_calls = 2.0

    def __init__(self, start_steps: int = 32) -> None:
        if int(start_steps) < 2 or int(start_steps) & (int(start_steps) - 1):
            raise ConfigError.bad_value(f"{KEY}.progressive.start_steps", f"{start_steps} is not a power of 2 >= 2",
                                        "Pass e.g. distill.progressive.start_steps=32: the steps halve each stage.")
        self.start_steps = int(start_steps)
        self.current = self.start_steps // 2
        self.stage_teacher: Denoiser | None = None

    def setup(self, scheduler: Scheduler, final_steps: int, total_steps: int, teacher_fn: DenoiseFn,
              shape: tuple[int, ...], conds: Tensor | None = None, device: torch.device | str = "cpu",
              loss_fn: DiffusionLoss | None = None) -> None:
        super().setup(scheduler, final_steps, total_steps, teacher_fn, shape, conds, device, loss_fn)
        self.check_steps(final_steps)
        self.stages = (self.start_steps // final_steps).bit_length() - 1  # log2 of the ratio: the halvings
        self.grids = {final_steps: _levels(scheduler, final_steps)}  # steps -> descending grid ending at 0
        n = final_steps
        while n < self.start_steps:
            own = _levels(scheduler, 2 * n)  # the scheduler's own finer grid when it nests (trailing), else midpoints
            nested = torch.allclose(own[::2], self.grids[n], rtol=1e-9, atol=0.0)
            self.grids[2 * n] = own if nested else insert_midpoints(self.grids[n])
            n *= 2

    def check_steps(self, steps: int) -> None:
        ratio = self.start_steps // steps
        if steps >= self.start_steps or self.start_steps % steps or ratio & (ratio - 1):
            raise ConfigError.bad_value(f"{KEY}.progressive.start_steps", f"{self.start_steps} does not halve down "
                                        f"to the student's {steps} steps (sampler.steps)",
                                        "Pass a power of 2 above sampler.steps, e.g. start_steps=32 with steps=1, 2 or 4.")

    def stage_length(self) -> int:
        """Training steps per halving."""
        return max(1, self.total_steps // self.stages)

    def steps(self) -> int:
        return self.current

    def loss(self, student: Denoiser, teacher_fn: DenoiseFn, x0: Tensor, cond: Any, generator: torch.Generator,
             clip: Callable[[Tensor], Tensor] = lambda x: x) -> Tensor:
        n, b = self.current, x0.shape[0]
        fine, coarse = self.grids[2 * n].to(x0.device), self.grids[n].to(x0.device)
        i = torch.randint(0, n, (b,), generator=generator, device=generator.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)
        if self.stage_teacher is not None:
            teacher = self.stage_teacher
            teacher_fn = lambda x, s, c=None: clip(teacher(x, s, c))
        return progressive_loss(student, teacher_fn, x0, eps, coarse[i], fine[2 * i + 1], coarse[i + 1], cond)

    def stage_done(self, step: int) -> bool:
        stage = min(self.stages - 1, step // self.stage_length())  # the stage the next step belongs to (0-based)
        return max(self.final_steps, self.start_steps >> (stage + 1)) < self.current

    def advance(self, student: Denoiser) -> None:
        self.stage_teacher = copy.deepcopy(student).requires_grad_(False).eval()  # PD Alg. 2: teacher <- student
        self.current //= 2

    def state_dict(self) -> dict[str, Any]:
        teacher = None if self.stage_teacher is None else self.stage_teacher.state_dict()
        return {"current": self.current, "stage_teacher": teacher}

    def load_state_dict(self, state: Mapping[str, Any], student: Denoiser) -> None:
        self.current = int(state.get("current", self.current))
        if state.get("stage_teacher") is not None:
            self.stage_teacher = copy.deepcopy(student).requires_grad_(False).eval()
            self.stage_teacher.load_state_dict(state["stage_teacher"])


class Reflow(DistillationMethod):
    """Reflow (Liu et al. 2023, Sec. 2.3): `pairs` noises z and the teacher's ODE solutions x_hat0 = ODE(z) (its
    `solver` at `solver_steps` steps on the student's grid kind, `solver_steps` calls per pair, before training);
    the student trains on x = x_hat0 + sigma z with its own denoising loss. A share `grid_share` of each batch sits
    at the levels of the student's sampling grids (1, 2, 4, ... up to its steps), the rest at training levels."""

    name = "reflow"
    sampler = ("euler", {})

    def __init__(self, pairs: int = 2000, solver: str = "unipc", solver_steps: int = 20, grid_share: float = 0.5,
                 batch_size: int = 250) -> None:
        for key, value in (("pairs", pairs), ("solver_steps", solver_steps), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError.bad_value(f"{KEY}.reflow.{key}", f"{value} must be >= 1", f"Pass {KEY}.reflow.{key}=...")
        if not 0.0 <= float(grid_share) <= 1.0:
            raise ConfigError.bad_value(f"{KEY}.reflow.grid_share", f"{grid_share} is outside [0, 1]",
                                        "0 draws every level as the teacher's training did; 0.5 is the default.")
        self.spec = SamplerSpec(solver, int(solver_steps))  # an unknown solver is SamplerSpec's ConfigError
        if not is_deterministic(self.spec):
            raise ConfigError.bad_value(f"{KEY}.reflow.solver", f"{solver!r} draws fresh noise: reflow needs the "
                                        "ODE's deterministic map from noise to image",
                                        "Use a deterministic sampler such as unipc, dpmpp_2m or heun.")
        self.pairs, self.grid_share, self.batch_size = int(pairs), float(grid_share), int(batch_size)

    def setup(self, scheduler: Scheduler, final_steps: int, total_steps: int, teacher_fn: DenoiseFn,
              shape: tuple[int, ...], conds: Tensor | None = None, device: torch.device | str = "cpu",
              loss_fn: DiffusionLoss | None = None) -> None:
        super().setup(scheduler, final_steps, total_steps, teacher_fn, shape, conds, device, loss_fn)
        z = torch.randn((self.pairs, *shape), generator=torch.Generator().manual_seed(0))  # (P, ...) the noises
        c = None if conds is None else conds[torch.arange(self.pairs) % len(conds)]
        x0, nfe = generate(teacher_fn, scheduler, self.spec, n=self.pairs, shape=shape, batch_size=self.batch_size,
                           device=device, cond=c, edit=Edit(noise=z))  # the teacher's ODE map z -> x_hat0
        self.teacher_calls = float(nfe)  # per pair
        self.z, self.x0, self.conds = z.to(device), x0.to(device), None if c is None else c.to(device)
        counts = [k for k in (1, 2, 4, 8, 16) if k <= final_steps] + [final_steps]
        self.grid_levels = torch.cat([_levels(scheduler, k)[:-1] for k in sorted(set(counts))]).to(device)

    def loss(self, student: Denoiser, teacher_fn: DenoiseFn, x0: Tensor, cond: Any, generator: torch.Generator,
             clip: Callable[[Tensor], Tensor] = lambda x: x) -> Tensor:
        b, dev = x0.shape[0], generator.device
        pick = torch.randint(0, self.pairs, (b,), generator=generator, device=dev).to(self.z.device)
        sigma = self.scheduler.sample_training_sigma(b, generator=generator, device=dev).to(x0.device)
        at_grid = torch.rand(b, generator=generator, device=dev).to(x0.device) < self.grid_share
        level = torch.randint(0, len(self.grid_levels), (b,), generator=generator, device=dev).to(x0.device)
        sigma = torch.where(at_grid, self.grid_levels.to(x0.device, sigma.dtype)[level], sigma)
        c = None if self.conds is None else self.conds[pick].to(x0.device)
        noise = (sigma, self.z[pick].to(x0.device, x0.dtype))
        return self.loss_fn(student, self.x0[pick].to(x0.device, x0.dtype), c, noise=noise)


METHODS: dict[str, type[DistillationMethod]] = {m.name: m for m in (ConsistencyDistillation, ProgressiveDistillation,
                                                                    Reflow)}


def _defaults(cls: type) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


def make_method(name: str, options: Mapping[str, Mapping[str, Any]] | None = None) -> DistillationMethod:
    """The recipe `name` with its options (`distill.<name>`); an unknown name or option, or options given for a
    recipe that is not the one chosen, is a ConfigError naming the key."""
    if name not in METHODS:
        raise ConfigError.bad_value(f"{KEY}.method", f"unknown distillation method {name!r}",
                                    f"Use one of {', '.join(METHODS)}.")
    options = {k: dict(v or {}) for k, v in (options or {}).items()}
    for other, given in options.items():
        if other not in METHODS:
            raise ConfigError.bad_value(f"{KEY}.{other}", "is not a distillation method's options",
                                        f"Options go under {', '.join(f'{KEY}.{m}' for m in METHODS)}.")
        defaults = _defaults(METHODS[other])
        for key, value in given.items():
            if key not in defaults:
                raise ConfigError.bad_value(f"{KEY}.{other}.{key}", f"{other} distillation has no option {key!r}",
                                            f"Its options: {', '.join(defaults)}.")
            if other != name and value != defaults[key]:
                raise ConfigError.bad_value(f"{KEY}.{other}.{key}", f"set, but {KEY}.method={name} does not use it",
                                            f"Pass {KEY}.method={other}, or drop the override.")
    return METHODS[name](**options.get(name, {}))
