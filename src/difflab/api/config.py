"""Configs from Python: `compose(overrides)` composes conf/ as the command line would, web UI sampler names and
nested group names included (`group_aliases`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from difflab.samplers.aliases import resolve as resolve_sampler
from difflab.utils.config import as_text_override, conf_dir
from difflab.utils.config import compose as compose_config


def group_aliases(argv: list[str], conf_dir: str | Path) -> list[str]:
    """Rewrite names Hydra cannot take before it composes (train.py, sample.py and evaluate.py call this):

    - `model.autoencoder=pretrained` -> the nested group override `model/autoencoder=pretrained` (Hydra names
      nested groups with '/'; a dotted key naming an existing option of that group is rewritten);
    - `sampler="DPM++ 2M Karras"` (a web UI name or its plain spelling dpmpp_2m_karras, `samplers/aliases.py`)
      -> `sampler=dpmpp_2m sampler.grid=karras`; an unknown name is a ConfigError listing the known ones;
    - `negative_prompt=(worst quality:1.4), lowres` or `prompt=a [dog:cat:0.5]` (text Hydra's grammar refuses or
      reads as a list) -> the value single-quoted for Hydra (`utils.config.as_text_override`); a value the user
      quoted, null and interpolations stay; in a multirun (-m) a comma keeps sweeping.
    """
    out = []
    multirun = "-m" in argv or "--multirun" in argv
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = Path(conf_dir, *key.split("."))
        if sep and key in ("prompt", "negative_prompt"):  # the web UI's prompt language: brackets, colons, commas
            arg = as_text_override(key, value, multirun)
        elif sep and "." in key and not key.startswith(("+", "~")) and (group / f"{value}.yaml").is_file():
            arg = f"{key.replace('.', '/')}={value}"
        elif sep and key == "sampler" and "," not in value and not (group / f"{value}.yaml").is_file():
            name, grid = resolve_sampler(value)
            out.append(f"sampler={name}")
            arg = f"sampler.grid={grid}" if grid else ""
        if arg:
            out.append(arg)
    return out


def compose(overrides: list[str] | tuple[str, ...] = (), config: str = "train", run_dir: str | Path | None = None) -> DictConfig:
    """The config `python <config>.py <overrides>` runs (conf/<config>.yaml), its outputs in `run_dir` (default: a
    fresh folder under `paths.runs_dir`, as the script would make). Web UI sampler names (`sampler="Euler a"`) and
    nested groups (`model.autoencoder=pretrained`) are rewritten as on the command line."""
    return compose_config(config, group_aliases(list(overrides), conf_dir()), run_dir)


def rewrite_argv(argv: list[str]) -> list[str]:
    """A command line with the names Hydra cannot take rewritten (`group_aliases` on difflab's config folder)."""
    return group_aliases(argv, conf_dir())
