"""Each distillation recipe trains a tiny student from the exact-denoiser mixture (the teacher: difflab.diffusion.toy)
whose one-step output beats the teacher's own one-step Euler, measured as the coupled error to the exact ODE solution
from the same noises; the recipes' options are checked with messages that name the key."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from difflab.diffusion import DiffusionLoss, DiscreteVPScheduler
from difflab.diffusion.precond import Denoiser
from difflab.errors import ConfigError
from difflab.lit.distill_methods import METHODS, make_method
from difflab.samplers import SAMPLERS
from oracles import MIX, mixture_denoiser

SCHED = DiscreteVPScheduler(grid="trailing", prediction="v")  # v: an eps student errs sigma_max x its eps error
SAMPLER = {"consistency": "lcm", "progressive": "ddim", "reflow": "euler"}
OPTIONS = {"consistency": {"intervals": 10}, "progressive": {"start_steps": 8}, "reflow": {"pairs": 1000}}


class TinyNet(nn.Module):
    """F(c_in x, c_noise) for 2-D points: an MLP on the point and Fourier features of t = c_noise / 1000."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(2 + 12, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                               nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, c_noise, cond=None):
        t = c_noise.float().reshape(-1, 1) / 1000
        freqs = math.pi / 2 * 2.0 ** torch.arange(6, dtype=torch.float32)
        return self.f(torch.cat([x, torch.sin(t * freqs), torch.cos(t * freqs)], 1))


@pytest.fixture(scope="module")
def pretrained() -> Denoiser:
    """A tiny denoiser trained on the mixture: the student's starting point, as a real student starts as its teacher."""
    torch.manual_seed(0)
    student = Denoiser(TinyNet(), SCHED)
    opt, loss_fn, g = torch.optim.Adam(student.parameters(), 2e-3), DiffusionLoss(), torch.Generator().manual_seed(1)
    for _ in range(600):
        loss = loss_fn(student, MIX.sample(256, g).float(), generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


@pytest.fixture(scope="module")
def exact() -> tuple[torch.Tensor, torch.Tensor]:
    """Noises x_T [400, 2] at sigma_max and the exact ODE map of them (UniPC, 100 log-SNR steps)."""
    x_T = torch.randn(400, 2, generator=torch.Generator().manual_seed(5)) * SCHED.prior_std(SCHED.sigma_max)
    return x_T, SAMPLERS["unipc"](mixture_denoiser, x_T, DiscreteVPScheduler(grid="logsnr").inference_sigmas(100))


def coupled_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Root mean squared distance between samples and the exact ODE solutions from the same noises."""
    return float((x - reference).pow(2).sum(1).mean().sqrt())


def distil(name: str, student: Denoiser, steps: int = 400) -> Denoiser:
    """Train `student` with recipe `name` from the exact mixture denoiser, as DistillationModule's loop does."""
    method = make_method(name, {name: OPTIONS[name]})
    method.setup(SCHED, 1, steps, mixture_denoiser, (2,))
    opt, g = torch.optim.Adam(student.parameters(), 1e-3), torch.Generator().manual_seed(2)
    for step in range(1, steps + 1):
        loss = method.loss(student, mixture_denoiser, MIX.sample(256, g).float(), None, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(student, step)
        if method.stage_done(step):
            method.advance(student)
    assert method.steps() == 1
    return student


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_student_step_beats_the_teachers_one_euler_step(name, pretrained, exact):
    x_T, reference = exact
    one = SCHED.inference_sigmas(1)
    teacher = coupled_error(SAMPLERS["euler"](mixture_denoiser, x_T, one), reference)  # ~ the data's spread
    student = distil(name, copy.deepcopy(pretrained))
    with torch.no_grad():
        got = coupled_error(SAMPLERS[SAMPLER[name]](student, x_T, one), reference)
    assert got < 0.4 * teacher, (name, got, teacher)


def test_progressive_stages_halve_the_steps_and_teach_each_other(pretrained):
    method = make_method("progressive", {"progressive": {"start_steps": 16}})
    method.setup(SCHED, 2, 30, mixture_denoiser, (2,))
    assert method.stages == 3 and method.stage_length() == 10 and method.steps() == 8
    seen = []
    for step in range(1, 31):
        if method.stage_done(step):
            method.advance(pretrained)
            seen.append((step, method.steps()))
    assert seen == [(10, 4), (20, 2)] and method.stage_teacher is not None
    assert not any(p.requires_grad for p in method.stage_teacher.parameters())


def test_options_are_checked_and_name_their_key():
    with pytest.raises(ConfigError, match="`distill.method`: unknown distillation method 'magic'"):
        make_method("magic")
    with pytest.raises(ConfigError, match="`distill.consistency.steps`: consistency distillation has no option"):
        make_method("consistency", {"consistency": {"steps": 3}})
    with pytest.raises(ConfigError, match="`distill.progressive.start_steps`: set, but distill.method=reflow"):
        make_method("reflow", {"progressive": {"start_steps": 8}})
    with pytest.raises(ConfigError, match="`distill.progressive.start_steps`: 12 is not a power of 2"):
        make_method("progressive", {"progressive": {"start_steps": 12}})
    with pytest.raises(ConfigError, match="`distill.consistency.solver`: unknown teacher solver 'rk4'"):
        make_method("consistency", {"consistency": {"solver": "rk4"}})
    with pytest.raises(ConfigError, match="`distill.reflow.solver`: 'ddpm' draws fresh noise"):
        make_method("reflow", {"reflow": {"solver": "ddpm"}})
    with pytest.raises(ConfigError, match="`distill.progressive.start_steps`: 4 does not halve down"):
        make_method("progressive", {"progressive": {"start_steps": 4}}).setup(SCHED, 4, 10, mixture_denoiser, (2,))
    assert make_method("reflow", {"progressive": {"start_steps": 32}}).name == "reflow"  # defaults are not "set"
