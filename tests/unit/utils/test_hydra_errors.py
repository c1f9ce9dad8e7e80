"""Hydra's and OmegaConf's errors as one paragraph with the fix (the entry points print it and exit with 2)."""

from __future__ import annotations

import errno

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.utils.config import conf_dir
from difflab.utils.hydra_errors import command_line_message, config_message


def _composing(*overrides: str) -> str | None:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            compose("train", overrides=list(overrides))
        except Exception as exc:  # noqa: BLE001  (the error under test)
            return command_line_message(exc)
    raise AssertionError(f"{overrides} composed")


@pytest.mark.parametrize("override,words", [
    ("trainer.max_steps=[1", ["Cannot parse the command-line override `trainer.max_steps=[1`", "Quote a value",
                              "'data.name=\"my data\"'"]),
    ("model.net.base_channel=8", ["Config key `model.net.base_channel` does not exist (did you mean `base_channels`",
                                  "The keys under `model.net` are:", "+model.net.base_channel=8"]),
    ("modle=ddpm", ["Config key `modle` does not exist (did you mean `model`?)", "+modle=ddpm"]),
    ("+seed=3", ["Config key `seed` exists already", "(seed=<value>)", "++seed=<value>"]),
    ("~callbacks.nope", ["Config key `callbacks.nope` does not exist, so `~callbacks.nope` removes nothing"]),
    ("model=ddpm_9000", ["There is no config `model/ddpm_9000` (model=ddpm_9000) (did you mean `ddpm`?)",
                         "cond_vector, ddim, ddpm", "conf/model/"]),
])
def test_a_command_line_hydra_cannot_compose_is_one_paragraph_with_the_fix(override: str, words: list[str]) -> None:
    message = _composing(override)
    assert message is not None and "\n" not in message
    for word in words:
        assert word in message, message


def test_a_run_folder_that_cannot_be_created_names_paths_runs_dir() -> None:
    message = command_line_message(FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/x"))
    assert message.startswith("Cannot create the folder '/proc/x' (config key `paths.runs_dir`)")
    assert command_line_message(ValueError("a bug")) is None


def test_a_key_the_built_class_does_not_take_names_its_options() -> None:
    node = OmegaConf.create({"net": {"_target_": "difflab.nets.unet.UNet", "base_channel": 8}})
    with pytest.raises(Exception) as caught:
        instantiate(node.net)
    message = config_message(caught.value)
    assert message.startswith("Config key `net.base_channel` is not an option of difflab.nets.unet.UNet (did you mean "
                              "`base_channels`")
    assert "Its options: in_channels, out_channels, base_channels" in message
    cfg = OmegaConf.create({"model": {"guidance_scale": "${nope}"}})
    with pytest.raises(Exception) as caught:
        OmegaConf.to_container(cfg, resolve=True)
    assert config_message(caught.value).startswith("Config key `model.guidance_scale` refers to a key that does not exist")
    assert config_message(ValueError("a bug")) is None
