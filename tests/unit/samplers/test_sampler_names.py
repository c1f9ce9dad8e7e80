"""Web UI sampler names ("DPM++ 2M Karras") resolve to a registered sampler plus a grid, on the command line too."""

from __future__ import annotations

import pytest
import torch

from conftest import CONF, compose_config
from difflab.api.config import group_aliases
from difflab.diffusion import DiscreteVPScheduler, EDMScheduler
from difflab.errors import ConfigError
from difflab.samplers import SAMPLERS, SamplerSpec
from difflab.samplers.aliases import WEBUI_NAMES, plain, resolve


def test_every_web_ui_name_and_its_plain_spelling_resolve_to_a_registered_sampler():
    for name, (sampler, grid) in WEBUI_NAMES.items():
        assert sampler in SAMPLERS and (CONF / "sampler" / f"{sampler}.yaml").is_file(), name
        assert resolve(name) == resolve(plain(name)) == resolve(name.upper()) == (sampler, grid)
    assert plain("DPM++ 2M SDE Karras") == "dpmpp_2m_sde_karras" and resolve("Euler a") == ("euler_a", None)


def test_a_web_ui_name_brings_its_grid_to_any_scheduler():
    spec = SamplerSpec("DPM++ 2M Karras", steps=10)
    assert (spec.name, spec.grid) == ("dpmpp_2m", "karras")
    torch.testing.assert_close(spec.sigmas(DiscreteVPScheduler()), DiscreteVPScheduler(grid="karras").inference_sigmas(10))
    torch.testing.assert_close(SamplerSpec("dpmpp_3m_sde_exponential", steps=7).sigmas(EDMScheduler()),
                               EDMScheduler(grid="logsnr").inference_sigmas(7))
    with pytest.raises(ConfigError, match="`sampler.grid`: unknown sigma grid 'leading' for EDMScheduler"):
        SamplerSpec("euler", steps=3, grid="leading").sigmas(EDMScheduler())


def test_command_line_names_are_rewritten_before_hydra_composes(tmp_path):
    argv = group_aliases(["train.py", "sampler=DPM++ 2M Karras", "sampler.steps=12"], CONF)
    assert argv == ["train.py", "sampler=dpmpp_2m", "sampler.grid=karras", "sampler.steps=12"]
    assert group_aliases(["x", "sampler=UniPC", "sampler=ddim,heun"], CONF) == ["x", "sampler=unipc", "sampler=ddim,heun"]
    cfg = compose_config("train", argv[1:], tmp_path)
    assert (cfg.sampler.name, cfg.sampler.grid, cfg.sampler.steps) == ("dpmpp_2m", "karras", 12)
    for entry in ("sample", "evaluate"):
        cfg = compose_config(entry, group_aliases(["x", "sampler=Euler a"], CONF)[1:], tmp_path)
        assert cfg.sampler.name == "euler_a" and cfg.sampler.grid is None
    with pytest.raises(ConfigError, match="unknown sampler .DPM\\+\\+ 9M.*web UI names: .*DPM\\+\\+ 2M Karras"):
        group_aliases(["train.py", "sampler=DPM++ 9M"], CONF)
