"""OmegaConf resolvers used by conf/ (registered on import of difflab.cli)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from difflab.errors import ConfigError, MissingFileError
from difflab.utils.run_folders import run_stamp
from difflab.utils.tables import value_columns


def auto_precision() -> str:
    """bf16-mixed on CUDA GPUs that support bf16, else 32-true."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def fused_adamw(precision: str = "") -> bool:
    """Use the fused AdamW kernel where torch has one for the training device (CUDA, and CPU since torch 2.4),
    except under Lightning's mixed precision (`precision` bf16-mixed / 16-mixed): a fused step declares that
    it unscales gradients itself, and Lightning then refuses gradient clipping (trainer.gradient_clip_val)."""
    return "mixed" not in str(precision)


def int_div(a: Any, b: Any) -> int:
    """`${int_div:a,b}`: a // b for sizes (e.g. the latent resolution data.resolution // f); a must divide evenly."""
    a, b = int(a), int(b)
    if b <= 0 or a % b:
        raise ValueError(f"int_div: {a} is not divisible by {b}")
    return a // b


def feature_size(resolution: Any, level: Any) -> int:
    """`${feature_size:${model.net.resolution},1}`: the UNet's feature-map size at `level` (0 = full resolution,
    each level halves it), so attention follows data.resolution instead of naming a size that may not exist."""
    return int(resolution) // 2 ** int(level)


def length(value: Any) -> int | None:
    """`${len:${data.columns}}`: the length of a list, None for null."""
    return None if value is None else len(value)


def csv_width(csv: Any, columns: Any, path_column: Any) -> int:
    """`${csv_width:${data.csv},${data.columns},${data.path_column}}`: the number of value columns of a CSV data
    set: those of `data.columns`, or with null the numeric columns of the file's header (`utils.tables`), so
    that `model=cond_vector data=csv` needs no `data.cond_dim`; a missing file is named here, first."""
    if columns:
        return len(columns)
    found = value_columns(str(csv), None if path_column is None else str(path_column))
    if not found:
        raise ConfigError.bad_value("data.columns", f"null, and {csv} has no column of numbers besides "
                                    f"'{path_column}'", "Add value columns to the file, or name them: "
                                    "data.columns=[x1,x2].")
    return len(found)


def config_choices() -> dict[str, str]:
    """The config-group choices of the running Hydra app (model=ddpm, sampler=ddim, ...); {} outside Hydra."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")}


def config_choice(group: str, default: str | None = None) -> str | None:
    """The running app's choice for config group `group` (e.g. model -> 'ddpm'); `default` outside Hydra."""
    return config_choices().get(group, default)


def sweep_name() -> str | None:
    """Name of the multirun sweep folder (`hydra.sweep.dir`) in an `-m` run; None in a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir)).name


def sweeper_direction() -> str | None:
    """In a multirun, the sweeper's `direction` (minimize | maximize; minimize when it has none); None in a single run."""
    if sweep_name() is None:
        return None
    return str(HydraConfig.get().sweeper.get("direction", "minimize"))


def as_text_override(key: str, value: str, multirun: bool = False) -> str:
    """`key=value` such that Hydra reads `value` as exactly that text: unchanged when it already does (or reads
    null, a number, an interpolation, a value the user quoted; in a multirun also a sweep), else single-quoted for Hydra's grammar
    (quotes escaped, backslashes before a quote or at the end doubled). Prompts such as `(worst quality:1.4), bad`
    or `[dog:cat:0.5]` need no quotes on the command line."""
    arg = f"{key}={value}"
    try:
        parsed = OverridesParser.create().parse_override(arg).value()
    except HydraException:  # Hydra's grammar refuses it: text with brackets, colons, ...
        parsed = ...
    quoted = value[:1] in ("'", '"') and parsed is not ...
    if quoted or parsed is None or parsed == value or isinstance(parsed, (int, float, bool)) or (
            multirun and isinstance(parsed, ChoiceSweep)):
        return arg
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)  # \' -> \\\' (a backslash, a quote)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)  # a trailing backslash must not escape the quote
    return f"{key}='{escaped}'"


def instantiate_group(group: Any) -> list[Any]:
    """Instantiate every entry of a dict-of-targets config group (callbacks, loggers); null entries are skipped."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def conf_dir() -> Path:
    """The config folder every entry point and test composes from: `$DIFFLAB_CONF` if set; in a source checkout
    (`src/difflab` beside `pyproject.toml`), its top-level `conf/`; in an installed package, `difflab/conf`
    (copied there from `conf/` when the wheel is built, see setup.py)."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parents[1]
    if os.environ.get("DIFFLAB_CONF"):
        path, how = Path(os.environ["DIFFLAB_CONF"]), "the environment variable DIFFLAB_CONF"
    elif package.parent.name == "src" and (checkout / "pyproject.toml").is_file():
        path, how = checkout / "conf", f"the checkout {checkout}"
    else:
        path, how = package / "conf", f"the installed package {package}"
    if not (path / "train.yaml").is_file():
        raise MissingFileError(f"difflab's config folder not found at {path} (no train.yaml; taken from {how}). Set "
                               "DIFFLAB_CONF to the `conf/` folder of a difflab checkout, or reinstall the package "
                               "from a wheel built by `pip wheel .` (it ships the configs as difflab/conf).")
    return path


def compose(config_name: str, overrides: list[str], run_dir: str | Path | None) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with command-line style overrides, as `python <config_name>.py` would.

    For notebooks and scripts: the run's outputs go to `run_dir` (None: the config's own `paths.run_dir`, a fresh
    folder under `paths.runs_dir`; caches stay under `paths.root_dir`), and the
    Hydra choices (model=..., sampler=...) are recorded as in a real run, so its records name the variant.
    """
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        where = [f"paths.run_dir={Path(run_dir).resolve()}"] if run_dir is not None else []
        cfg = hydra_compose(config_name, overrides=[*where, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if run_dir is None:  # the folder the script would make: hydra.run.dir (a fresh stamped name)
            cfg.paths.run_dir = str(Path(OmegaConf.select(cfg, "hydra.run.dir")).resolve())
        del cfg["hydra"]
    return cfg


def register_resolvers() -> None:
    """Idempotently register difflab's resolvers."""
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("fused_adamw", fused_adamw, replace=True)
    OmegaConf.register_new_resolver("int_div", int_div, replace=True)
    OmegaConf.register_new_resolver("choice", config_choice, replace=True)
    OmegaConf.register_new_resolver("sweep_name", sweep_name, replace=True)
    OmegaConf.register_new_resolver("len", length, replace=True)
    OmegaConf.register_new_resolver("csv_width", csv_width, replace=True)
    OmegaConf.register_new_resolver("feature_size", feature_size, replace=True)
    # cached: resolved once per config (and Hydra copies the cache into each job of a sweep)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True, use_cache=True)
