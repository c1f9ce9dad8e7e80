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


NEW_NAMES = {"DPM2": ("dpm_2", None), "DPM2 a": ("dpm_2_a", None), "DPM++ 2S a": ("dpmpp_2s_a", None),
             "DPM fast": ("dpm_fast", None), "Restart": ("restart", None),
             "DPM++ 2M SDE Heun": ("dpmpp_2m_sde_heun", None), "DPM2 a Karras": ("dpm_2_a", "karras"),
             "DPM++ 2M SDE Heun Exponential": ("dpmpp_2m_sde_heun", "logsnr")}
SCHEDULE_NAMES = {"Align Your Steps": "ays", "Align Your Steps SDXL": "ays_sdxl", "SGM Uniform": "sgm_uniform",
                  "Simple": "simple", "Beta": "beta", "Exponential": "logsnr", "Polyexponential": "logsnr",
                  "Karras": "karras"}


def test_the_web_uis_other_sampler_names_resolve_on_every_command(tmp_path):
    """Each name as a new user types it, quoted or plainly, composed by train.py, sample.py and evaluate.py in turn."""
    for i, (name, (sampler, grid)) in enumerate(NEW_NAMES.items()):
        assert WEBUI_NAMES[name] == (sampler, grid) and resolve(plain(name)) == (sampler, grid)
        entry = ("train", "sample", "evaluate")[i % 3]
        for spelled in (name, plain(name)):
            cfg = compose_config(entry, group_aliases(["x", f"sampler={spelled}"], CONF)[1:], tmp_path)
            assert (cfg.sampler.name, cfg.sampler.grid) == (sampler, grid), (entry, spelled)


def test_schedule_types_resolve_as_sampler_grid_and_after_a_sampler_name(tmp_path):
    """`sampler.grid="Align Your Steps"` (or align_your_steps), and "DPM++ 2M SGM Uniform" as one sampler name."""
    for name, grid in SCHEDULE_NAMES.items():
        assert SamplerSpec("euler", steps=4, grid=name).grid == grid
        assert SamplerSpec("euler", steps=4, grid=plain(name)).grid == grid
        assert resolve(f"DPM++ 2M {name}") == ("dpmpp_2m", grid)
        assert resolve(f"euler_a_{plain(name)}") == ("euler_a", grid)
        spec = SamplerSpec(f"Euler a {name}", steps=10)
        assert spec.sigmas(DiscreteVPScheduler()).shape == (11,)
    argv = group_aliases(["x", "sampler=DPM++ 2M SGM Uniform", "sampler.steps=12"], CONF)
    assert argv == ["x", "sampler=dpmpp_2m", "sampler.grid=sgm_uniform", "sampler.steps=12"]
    cfg = compose_config("sample", ["sampler=dpmpp_2m", "sampler.grid=Align Your Steps"], tmp_path)
    assert SamplerSpec(**{k: v for k, v in cfg.sampler.items() if k != "_target_"}).grid == "ays"
    with pytest.raises(ConfigError, match="unknown sampler 'DPM2 Karras Beta'"):
        resolve("DPM2 Karras Beta")  # a name that already brings its grid takes no schedule type
    with pytest.raises(ConfigError, match="`sampler.grid`: unknown sigma grid 'uniform_ish'"):
        SamplerSpec("euler", steps=4, grid="uniform_ish").sigmas(DiscreteVPScheduler())


def test_every_registered_sampler_is_a_sampler_config_and_the_base_is_none():
    """The studio's menu (`studio.app.sampler_choices`) and `sampler=<name>` read conf/sampler/*.yaml, then
    `WEBUI_NAMES`: every registered sampler has its config, and the shared base sits in a subfolder."""
    options = {p.stem for p in (CONF / "sampler").glob("*.yaml")}
    assert options == set(SAMPLERS) | {"own"}, options ^ set(SAMPLERS)  # own: sample.py's "the model's own sampler"
    assert (CONF / "sampler" / "base" / "common.yaml").is_file()


@pytest.mark.slow
def test_the_studio_offers_every_registered_sampler_and_web_ui_name():
    pytest.importorskip("gradio", reason="the studio's page needs gradio (studio extra)")
    from difflab.studio.app import sampler_choices

    choices = sampler_choices()
    assert set(SAMPLERS) <= set(choices) and set(WEBUI_NAMES) <= set(choices)
    assert "base" not in choices and "common" not in choices
