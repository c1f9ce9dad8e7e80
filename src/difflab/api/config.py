"""Configs from Python: `compose(overrides)` composes conf/ as the command line would, web UI sampler names and
nested group names included (`group_aliases`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from difflab.api import checks
from difflab.errors import ConfigError
from difflab.evaluation.suite import MetricsConfig
from difflab.samplers import SamplerSpec
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


_COMPOSE = threading.Lock()  # Hydra's global state: one composition at a time


@contextmanager
def _own_hydra() -> Iterator[None]:
    """A composition of its own inside a process that may run a Hydra app (the studio, a notebook after a run):
    the app's global Hydra state is set aside and restored."""
    with _COMPOSE:
        held = GlobalHydra.instance()
        app = held.hydra if held.is_initialized() else None
        held.clear()
        try:
            yield
        finally:
            GlobalHydra.instance().clear()
            if app is not None:
                GlobalHydra.instance().initialize(app)


def compose(overrides: list[str] | tuple[str, ...] = (), config: str = "train", run_dir: str | Path | None = None) -> DictConfig:
    """The config `python <config>.py <overrides>` runs (conf/<config>.yaml), its outputs in `run_dir` (default: a
    fresh folder under `paths.runs_dir`, as the script would make). Web UI sampler names (`sampler="Euler a"`) and
    nested groups (`model.autoencoder=pretrained`) are rewritten as on the command line."""
    with _own_hydra():
        return compose_config(config, group_aliases(list(overrides), conf_dir()), run_dir)


MULTIRUN_FLAGS = ("-m", "--multirun")


def rewrite_argv(argv: list[str]) -> list[str]:
    """A command line with the names Hydra cannot take rewritten (`group_aliases` on difflab's config folder), and
    `-m` moved before the overrides wherever it was typed (`evaluate.py ckpt=... -m sampler=ddim,heun`: Hydra's
    parser takes the overrides as one list)."""
    flags = [a for a in argv[1:] if a in MULTIRUN_FLAGS]
    rest = [a for a in argv[1:] if a not in MULTIRUN_FLAGS]
    return group_aliases(argv[:1] + flags[:1] + rest, conf_dir())


def group_option(group: str, option: str) -> DictConfig:
    """conf/<group>/<option>.yaml as `<group>=<option>` composes it (its defaults merged), e.g. a sampler preset."""
    with _own_hydra(), initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            cfg = hydra_compose("evaluate", overrides=[f"{group}={option}"])
        except ConfigCompositionException as err:
            known = ", ".join(sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")))
            raise ConfigError.bad_value(group, f"{option!r} is not one of difflab's {group} presets ({err})",
                                        f"Known: {known}.") from None
    return cfg[group]


def sampler_spec(sampler: str | SamplerSpec | Mapping[str, Any] | None, steps: int | None = None,
                 grid: str | None = None, **knobs: Any) -> SamplerSpec | None:
    """A sampler as `sampler=<name>` (a registered name or a web UI name such as "DPM++ 2M Karras") composes it from
    conf/sampler/, a mapping of its fields, or a `SamplerSpec` as it is; `steps`, `grid` and knobs override its
    values. None (and no override) keeps the model's own sampler."""
    if sampler is None:
        if steps is None and grid is None and not knobs:
            return None
        raise ConfigError.bad_value("sampler", "steps, grid or knobs were given without a sampler",
                                    "Name the sampler too, e.g. sampler=\"DPM++ 2M Karras\", steps=20.")
    if isinstance(sampler, SamplerSpec) and steps is None and grid is None and not knobs:
        return sampler
    if isinstance(sampler, SamplerSpec):
        fields: dict[str, Any] = {"name": sampler.name, "steps": sampler.steps, "clip_denoised": sampler.clip_denoised,
                                  "dynamic_percentile": sampler.dynamic_percentile, "grid": sampler.grid,
                                  "grid_effort": sampler.grid_effort, "grid_distance": sampler.grid_distance,
                                  "grid_inception": sampler.grid_inception, **sampler.knobs}
    elif isinstance(sampler, str):
        name, alias_grid = resolve_sampler(sampler)
        fields = OmegaConf.to_container(group_option("sampler", name), resolve=True)
        fields.update({"grid": alias_grid} if alias_grid else {})
    else:
        fields = dict(sampler)
    fields.update({k: v for k, v in (("steps", steps), ("grid", grid)) if v is not None}, **knobs)
    return checks.sampler_spec(OmegaConf.create({k: v for k, v in fields.items() if k != "_target_"}))


def group_object(group: str, option: str) -> Any:
    """The object a preset of a config group builds, e.g. group_object("data", "digits") -> a data module."""
    return instantiate(group_option(group, option), _convert_="all")


def metrics_config(metrics: str | MetricsConfig | Mapping[str, Any]) -> MetricsConfig:
    """A metrics preset of conf/metrics by name (none, fast, default, full, nll), a `MetricsConfig` as it is, a composed
    `metrics` node (`difflab.compose([...], config="evaluate").metrics`), or its fields."""
    if isinstance(metrics, MetricsConfig):
        return metrics
    if isinstance(metrics, str):
        return group_object("metrics", metrics)
    if "_target_" in metrics:
        return instantiate(metrics, _convert_="all")
    return MetricsConfig(**dict(metrics))
