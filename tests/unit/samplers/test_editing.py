"""Editing with any model: img2img (SDEdit), inpainting by replacement, noise interpolation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_NET, compose_config
from difflab.diffusion import DiscreteVPScheduler
from difflab.samplers import Edit, SamplerSpec, generate, is_deterministic, slerp
from oracles import mixture_denoiser

SCHED = DiscreteVPScheduler(grid="karras")


def _init(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "dpmpp_2m", "ddpm", "euler_a"])
def test_img2img_strength_zero_returns_the_input_and_strength_moves_it_gradually(name: str) -> None:
    init, spec = _init(), SamplerSpec(name, steps=20)
    same, nfe = generate(mixture_denoiser, SCHED, spec, n=6, shape=(2,), edit=Edit(init=init, strength=0.0))
    assert torch.equal(same, init) and nfe == 0
    dist = [(generate(mixture_denoiser, SCHED, spec, n=6, shape=(2,), edit=Edit(init=init, strength=s))[0] - init).norm()
            for s in (0.1, 0.5, 1.0)]
    assert 0 < dist[0] < dist[2] and dist[1] < dist[2] * 1.5


def test_img2img_runs_the_tail_of_the_grid() -> None:
    _, nfe = generate(mixture_denoiser, SCHED, SamplerSpec("euler", steps=20), n=2, shape=(2,),
                      edit=Edit(init=_init(2), strength=0.25))
    assert nfe == 5


@pytest.mark.parametrize("name", ["ddim", "heun", "dpmpp_2m", "ddpm"])
def test_inpainting_keeps_the_known_pixels_exactly_and_fills_the_rest(name: str) -> None:
    init = _init()
    mask = torch.tensor([[1.0, 0.0]]).expand(6, 2)  # keep coordinate 0, generate coordinate 1
    x, _ = generate(mixture_denoiser, SCHED, SamplerSpec(name, steps=20), n=6, shape=(2,), seed=1,
                    edit=Edit(init=init, mask=mask))
    assert torch.equal(x[:, 0], init[:, 0])
    assert not torch.allclose(x[:, 1], init[:, 1])


def test_interpolation_endpoints_are_the_two_images_and_refuses_stochastic_samplers() -> None:
    from difflab.samplers import StackedGenerator, sample_seeds

    z = StackedGenerator(sample_seeds(0, 1, 0) + sample_seeds(0, 1, 5)).randn((2, 2))
    frames = slerp(z[0], z[1], torch.linspace(0, 1, 5))
    torch.testing.assert_close(frames[[0, -1]], z)
    wide = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0))
    norms = slerp(wide[0], wide[1], torch.linspace(0, 1, 9)).norm(dim=1) / 64  # sqrt(4096): the noise shell
    assert torch.allclose(norms, torch.ones(9), atol=0.04)  # slerp stays on it; a straight line would dip to 0.71
    spec = SamplerSpec("ddim", steps=10)
    path, _ = generate(mixture_denoiser, SCHED, spec, n=5, shape=(2,), edit=Edit(noise=frames))
    plain, _ = generate(mixture_denoiser, SCHED, spec, n=6, shape=(2,), seed=0)
    torch.testing.assert_close(path[[0, -1]], plain[[0, 5]])
    assert is_deterministic(SamplerSpec("heun", steps=3)) and is_deterministic(SamplerSpec("dpmpp_2m", steps=3))
    assert not is_deterministic(SamplerSpec("ddim", steps=3, eta=1.0)) and not is_deterministic(SamplerSpec("ddpm"))


def test_sample_cli_modes(tmp_path: Path) -> None:
    from difflab.cli import sample, train

    out = train.run(compose_config("train", ["debug=fast", "logger=csv", "metrics=none", *TINY_NET], tmp_path / "t"))
    img = np.zeros((16, 16), dtype=np.uint8)
    img[4:12, 6:10] = 255
    Image.fromarray(img).save(tmp_path / "digit.png")
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:, 8:] = 255  # regenerate the right half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = [f"ckpt={out['last_ckpt']}", "n=3", "sampler=ddim", "sampler.steps=4", "batch_size=2"]
    kept = sample.run(compose_config("sample", [*base, "mode=img2img", f"init_image={tmp_path / 'digit.png'}",
                                                "strength=0.0"], tmp_path / "a"))
    assert torch.allclose(kept["images"], torch.from_numpy(img).float().div(127.5).sub(1).expand(3, 1, 16, 16))
    painted = sample.run(compose_config("sample", [*base, "mode=inpaint", f"init_image={tmp_path / 'digit.png'}",
                                                   f"mask={tmp_path / 'mask.png'}"], tmp_path / "b"))
    torch.testing.assert_close(painted["images"][..., :8], kept["images"][..., :8])
    record = json.loads((painted["out_dir"] / "samples.json").read_text())
    assert record["mode"] == "inpaint" and record["mask"].endswith("mask.png")
    frames = sample.run(compose_config("sample", [*base, "mode=interpolate", "interpolate_between=[0,2]"], tmp_path / "c"))
    plain = sample.run(compose_config("sample", [*base], tmp_path / "d"))
    torch.testing.assert_close(frames["images"][[0, 2]], plain["images"][[0, 2]])
    with pytest.raises(ValueError, match="deterministic"):
        sample.run(compose_config("sample", [*base[:2], "sampler=ddpm", "sampler.steps=3", "mode=interpolate"], tmp_path / "e"))
    with pytest.raises(FileNotFoundError, match="init_image"):
        sample.run(compose_config("sample", [*base, "mode=img2img", f"init_image={tmp_path / 'none.png'}"], tmp_path / "f"))
