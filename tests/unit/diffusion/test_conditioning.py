"""Conditions that change with the step, and text conditions of several tensors or lengths
(diffusion/conditioning.py), inside every registered sampler, guidance and the Denoiser."""

from __future__ import annotations

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.conditioning import GridConditions, TextCond, cat_conds, run_by_length
from difflab.diffusion.guidance import guided
from difflab.nets.prompts import parse_prompt
from difflab.nets.text import PromptSchedule
from difflab.samplers import SAMPLERS, SamplerSpec, generate
from difflab.samplers.euler import sample_euler

SCHED = DiscreteVPScheduler(grid="karras")
CODES = {"a": -1.5, "b": 2.0, "n": 0.5, "m": -0.25}  # text -> the mean the condition asks for
SD = 0.5


def encode(texts: list[str]) -> torch.Tensor:
    """A stand-in text encoder: the condition of text t is its mean CODES[t] ([B, 1])."""
    return torch.tensor([[CODES[t]] for t in texts])


def schedule(*prompts: str) -> PromptSchedule:
    return PromptSchedule([parse_prompt(p) for p in prompts], encode)


class Gaussian:
    """The exact denoiser of N(mu, SD^2) data with mu the condition [B, 1]; records (sigma, mu) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def __call__(self, x, sigma, cond=None):  # noqa: ANN001, ANN204
        from difflab.diffusion.conditioning import resolve

        mu = resolve(cond, sigma)  # (B, 1)
        self.calls += [(float(s), float(m)) for s, m in zip(sigma, mu[:, 0])]
        s2 = sigma.float().reshape(-1, 1) ** 2
        return mu + (x - mu) * SD**2 / (SD**2 + s2)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_prompt_editing_switches_at_its_step_inside_every_sampler(name) -> None:
    """[a:b:0.5] on 10 steps: every query above sigmas[5] sees a, every query at or below it b; [a|b] alternates by
    step (the step of a noise level: diffusion/conditioning.py)."""
    spec = SamplerSpec(name, steps=10)
    sigmas = spec.sigmas(SCHED)
    for prompt, expected in (("[a:b:0.5]", lambda i: "a" if i < 5 else "b"), ("[a|b]", lambda i: "ab"[i % 2])):
        fn = Gaussian()
        generate(fn, SCHED, spec, n=2, shape=(1,), seed=0, cond=schedule(prompt, prompt))
        assert len(fn.calls) >= 20
        for sigma, mu in fn.calls:
            step = int((sigmas[1:-1] >= sigma * (1 - 1e-6)).sum())  # the grid interval (sigmas[i+1], sigmas[i]]
            assert mu == CODES[expected(step)], (name, prompt, sigma, step)


def test_a_switch_mid_run_is_two_runs_of_a_one_step_sampler() -> None:
    """The exact oracle: Euler on the first 5 steps with a, then on the rest with b."""
    spec, x_T = SamplerSpec("euler", steps=10), torch.randn(3, 1, generator=torch.Generator().manual_seed(0))
    sigmas = spec.sigmas(SCHED)
    got = sample_euler(Gaussian(), x_T, sigmas, cond=schedule("[a:b:5]", "[a:b:0.2]", "b").on_grid(sigmas))
    a, b = encode(["a"] * 3), encode(["b"] * 3)
    half = sample_euler(Gaussian(), x_T, sigmas[:6], cond=torch.cat([a[:1], b[1:]]))
    want = sample_euler(Gaussian(), half, sigmas[5:], cond=b)
    two = sample_euler(Gaussian(), sample_euler(Gaussian(), x_T[1:2], sigmas[:3], cond=a[:1]), sigmas[2:], cond=b[:1])
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], two[0])  # 0.2 of 10 steps: a for 2 steps
    torch.testing.assert_close(got[2], sample_euler(Gaussian(), x_T[2:], sigmas, cond=b[:1])[0])


def test_img2img_counts_the_steps_it_runs_and_guidance_schedules_the_negative_prompt() -> None:
    from difflab.samplers import Edit

    spec = SamplerSpec("euler", steps=10)
    fn = Gaussian()
    edit = Edit(init=torch.zeros(1, 1), strength=0.6)  # runs the last 6 steps: [a:b:0.5] switches after 3 of them
    generate(fn, SCHED, spec, n=1, shape=(1,), cond=schedule("[a:b:0.5]"), edit=edit)
    assert [mu for _, mu in fn.calls] == [CODES["a"]] * 3 + [CODES["b"]] * 3
    fn = Gaussian()
    g = guided(fn, 3.0, null=schedule("[n:m:0.5]"))
    generate(g, SCHED, spec, n=1, shape=(1,), cond=encode(["a"]))
    conds = [mu for _, mu in fn.calls]  # each call: the row of cond, then the row of the negative prompt
    assert conds[0::2] == [CODES["a"]] * 10 and conds[1::2] == [CODES["n"]] * 5 + [CODES["m"]] * 5


def test_schedules_are_refused_with_an_optimized_grid() -> None:
    from difflab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sampler\.grid.*\[from:to:when\]"):
        generate(Gaussian(), SCHED, SamplerSpec("euler", steps=4, grid="optimized"), n=1, shape=(1,),
                 cond=schedule("[a:b:0.5]"))


def test_text_conds_join_rows_of_different_lengths_and_run_by_length() -> None:
    short, long = TextCond(torch.randn(2, 3, 4), torch.randn(2, 5)), TextCond(torch.randn(1, 6, 4), torch.randn(1, 5))
    both = cat_conds([short, long])
    assert both.context.shape == (3, 6, 4) and both.lengths.tolist() == [3, 3, 6] and both.pooled.shape == (3, 5)
    seen = []

    def net(x, c_noise, cond):  # noqa: ANN001, ANN202
        seen.append(cond.context.shape)
        return x + cond.context.sum(dim=(1, 2))[:, None] + cond.pooled.sum(1, keepdim=True)

    x = torch.zeros(3, 1)
    out = run_by_length(net, x, torch.zeros(3), both)
    assert sorted(seen) == [(1, 6, 4), (2, 3, 4)]  # one forward per length, padding never seen
    want = torch.cat([short.context.sum(dim=(1, 2)) + short.pooled.sum(1), long.context.sum(dim=(1, 2)) + long.pooled.sum(1)])
    torch.testing.assert_close(out[:, 0], want)
    plain = run_by_length(lambda x, c, cond: cond, x[:2], torch.zeros(2), TextCond(short.context))
    assert isinstance(plain, torch.Tensor)  # a context alone reaches a net as its tensor
    grid = GridConditions(encode(["a", "b"]), torch.tensor([[0, 1], [1, 1]]), torch.tensor([2.0, 1.0, 0.0]))
    assert grid.at(torch.tensor([2.0, 2.0]))[:, 0].tolist() == [CODES["a"], CODES["b"]]
    assert grid.at(torch.tensor([1.0]))[:, 0].tolist() == [CODES["b"], CODES["b"]]  # one level for every row
