"""Reading difflab checkpoints: compatibility checks with clear errors, and loading for sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from torch import Tensor

from difflab.conditions import with_condition
from difflab.errors import ConfigError, CorruptFileError, IncompatibleCheckpointError, MissingFileError
from difflab.samplers.grids import checkpoint_grid_cache
from difflab.utils.checkpoint_files import load_checkpoint_file
from difflab.utils.config import register_resolvers
from difflab.utils.stored_config import instantiate_stored, stored_target


class CheckpointMismatchError(IncompatibleCheckpointError):
    """A checkpoint was written by a different network than the one configured."""


class CheckpointNotFoundError(MissingFileError):
    """The checkpoint path does not exist or is not a difflab checkpoint."""


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Leaf-level differences between two nested config dicts, as 'key: a -> b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            lines += _config_diff(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{prefix}{key}.")
        return lines
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} (checkpoint) vs {b!r} (current)"]


def check_state_dict_compatible(
    saved: dict[str, Tensor],
    current: dict[str, Tensor],
    saved_config: dict[str, Any] | None = None,
    current_config: dict[str, Any] | None = None,
) -> None:
    """Raise CheckpointMismatchError naming missing/unexpected/reshaped weights and the net config diff."""
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    reshaped = sorted(k for k in set(saved) & set(current) if saved[k].shape != current[k].shape)
    if not (missing or unexpected or reshaped):
        return
    lines = ["the checkpoint was written by a different network than the one configured:"]
    if reshaped:
        lines += [f"  {k}: {tuple(saved[k].shape)} in the checkpoint, {tuple(current[k].shape)} now" for k in reshaped[:5]]
        lines += [f"  ... and {len(reshaped) - 5} more reshaped tensors"] if len(reshaped) > 5 else []
    if missing:
        lines.append(f"  {len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} weights in the checkpoint that the model lacks, e.g. {unexpected[:3]}")
    if saved_config and current_config:
        diff = _config_diff(saved_config.get("model", {}), current_config.get("model", {}), "model.")
        diff.sort(key=lambda line: not line.startswith("model.net."))  # the network's own keys first
        if diff:
            lines.append("config differences:")
            lines += [f"  {d}" for d in diff[:12]]
    lines.append("Use the same model overrides as the run that wrote the checkpoint.")
    raise CheckpointMismatchError("\n".join(lines))


def folder_hint(folder: Path, key: str) -> str:
    """What to pass instead of a folder: the checkpoints inside it (a run folder's checkpoints/ first)."""
    found = sorted([*folder.glob("checkpoints/*.ckpt"), *folder.glob("*.ckpt")],
                   key=lambda p: (p.parent != folder / "checkpoints", p.name != "last.ckpt", p.name))
    if found:
        return f"Pass a file inside it, e.g. {key}={found[0]}" + (f" (it holds {len(found)} checkpoints)." if len(found) > 1 else ".")
    return f"It holds no .ckpt file; pass {key}=<run folder>/checkpoints/last.ckpt."


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", key: str = "ckpt") -> dict[str, Any]:
    """Load a checkpoint as data, with a clear error when it is missing, a folder, broken or not a difflab checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointNotFoundError(f"Config key `{key}` names the folder '{path}', not a checkpoint file. "
                                      f"{folder_hint(path, key)}")
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint not found: {path} (config key `{key}`). Runs write them to "
            "<run folder>/checkpoints/last.ckpt and best.ckpt."
        )
    ckpt = load_checkpoint_file(path, key=key, map_location=map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt.get("config"), dict):
        lacks = [k for k in ("state_dict", "config") if not isinstance(ckpt, dict) or k not in ckpt]
        raise IncompatibleCheckpointError(
            f"'{path}' (config key `{key}`) is not a difflab checkpoint: it has no {' and no '.join(lacks) or 'run config'} "
            "(difflab checkpoints carry the weights and the run's resolved config). Pass "
            f"{key}=<a checkpoint written by python train.py, e.g. <run folder>/checkpoints/last.ckpt>; a diffusers "
            "pipeline folder is read with model=diffusers pipeline.path=<folder>.")
    return ckpt


def stored_model_class(ckpt: dict[str, Any], path: str | Path, key: str = "ckpt") -> type:
    """The class that a checkpoint's stored `model._target_` names, after the trusted-target check of the whole
    model config (nothing is built; `utils/stored_config.py`).

    A target that is a loader function (model=diffusers: `load_diffusers_pipeline`) stands for the class its return
    annotation names."""
    model = ckpt["config"].get("model") or {}
    found = stored_target(model, path, "model", key)
    try:
        cls = found
        if not isinstance(found, type):  # `from __future__ import annotations`: the name, read in its module
            returned = found.__annotations__["return"]
            cls = found.__globals__[returned] if isinstance(returned, str) else returned
        if not isinstance(cls, type):
            raise TypeError(cls)
        return cls
    except Exception:
        raise IncompatibleCheckpointError(f"The checkpoint '{path}' (config key `{key}`) names the model "
                                          f"`{model.get('_target_')}`, which this difflab does not have.") from None


def require_model(ckpt: dict[str, Any], path: str | Path, key: str, wanted: Any, what: str, fix: str) -> type:
    """The stored model class when `wanted(cls)` holds; an IncompatibleCheckpointError naming the key otherwise."""
    cls = stored_model_class(ckpt, path, key)
    if not wanted(cls):
        choice = ((ckpt["config"].get("choices") or {}).get("model")) or cls.__name__
        raise IncompatibleCheckpointError(f"The checkpoint '{path}' (config key `{key}`) holds a model={choice} "
                                          f"({cls.__name__}), not {what}. {fix}")
    return cls


def _non_finite(t: Any) -> int:
    """How many values of a tensor are NaN or infinite (0 for integer tensors and non-tensors)."""
    return int((~torch.isfinite(t)).sum()) if torch.is_tensor(t) and t.is_floating_point() else 0


def check_finite_weights(module: torch.nn.Module, ckpt: dict[str, Any], use_ema: bool, path: str | Path,
                         key: str = "ckpt") -> None:
    """Every tensor that `load_weights` would load (the EMA weights in place of the weights they replace) holds
    finite values, unless the freshly built module's own tensor is non-finite there too (a buffer may be inf by
    design); a CorruptFileError naming the file, `key`, the tensor and the fix otherwise (never black samples)."""
    ema = ((ckpt.get("ema") or {}).get("params") or {}) if use_ema else {}
    loaded = {name: ("EMA weight", t) for name, t in ema.items()}
    loaded.update({name: ("weight", t) for name, t in ckpt["state_dict"].items() if name not in loaded})
    current = module.state_dict()
    bad = [(name, what, _non_finite(t), t.numel()) for name, (what, t) in loaded.items()
           if _non_finite(t) and not (name in current and _non_finite(current[name]))]
    if not bad:
        return
    name, what, count, total = bad[0]
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    if what == "EMA weight":
        other = " or use_ema=false to load its raw weights"
    else:
        other = " or use_ema=true to load its EMA weights" if not use_ema and ckpt.get("ema") else ""
    raise CorruptFileError.for_file(path, f"{count} of the {total} values of the {what} `{name}`{more} are NaN or "
                                    f"infinite (config key `{key}`); the run diverged before this checkpoint was "
                                    "written, or the file is damaged",
                                    f"Pass {key}=<an earlier checkpoint of the run>{other}. Nothing was sampled.")


def load_weights(module: torch.nn.Module, ckpt: dict[str, Any], use_ema: bool = True, path: str | Path = "<checkpoint>",
                 key: str = "ckpt") -> None:
    """Load a checkpoint's weights into `module` (checked against its network, and for non-finite values, first),
    then its EMA weights when `use_ema` and the checkpoint has them."""
    state = ckpt["state_dict"]
    check_state_dict_compatible(state, module.state_dict(), ckpt["config"], ckpt["config"])
    check_finite_weights(module, ckpt, use_ema, path, key)
    module.load_state_dict(state)
    ema = ckpt.get("ema")
    if use_ema and ema is not None:
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in ema["params"].items():
                params[name].copy_(value)


def _check_scheduler(node: Any, overrides: dict[str, Any], path: str | Path) -> None:
    """Build the checkpoint's scheduler with the command line's `scheduler.*` values alone first, so that a value it
    refuses (`scheduler.grid=karass`) is a ConfigError naming the key, not a failure inside the model's build."""
    try:
        instantiate_stored(node, path, "model.scheduler")
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, (ValueError, TypeError)):
            raise
        keys = ", ".join(f"scheduler.{k}={v}" for k, v in overrides.items())
        raise ConfigError.bad_value(f"scheduler.{next(iter(overrides))}" if len(overrides) == 1 else "scheduler",
                                    f"the checkpoint's scheduler refuses {keys}: {cause}",
                                    "See conf/scheduler/ for the options of each scheduler.") from None


def load_module(
    path: str | Path,
    sampler: Any = None,
    scheduler_overrides: dict[str, Any] | None = None,
    use_ema: bool = True,
    key: str = "ckpt",
    ckpt: dict[str, Any] | None = None,
) -> Any:
    """Rebuild a DiffusionModule from a checkpoint's saved config and load its (EMA) weights, on CPU.

    `sampler` (a config node or SamplerSpec) replaces the saved sampler; `scheduler_overrides`
    (e.g. {"grid": "trailing"}) are merged onto the saved scheduler config; `ckpt` is the file's content when the
    caller has read it already (`read_checkpoint`); errors name the config key `key`.
    """
    register_resolvers()
    ckpt = read_checkpoint(path, key=key) if ckpt is None else ckpt
    require_model(ckpt, path, key, lambda cls: hasattr(cls, "generate"), "a model that generates images",
                  "Pass the checkpoint of a diffusion model (python train.py model=ddpm|cond|cond_vector|ldm ...).")
    cfg = OmegaConf.create(ckpt["config"])
    cfg.model = with_condition(OmegaConf.to_container(cfg.model))  # configs written before `model.condition`
    if scheduler_overrides and "scheduler" in cfg.model:
        unknown = sorted(set(scheduler_overrides) - set(cfg.model.scheduler))
        if unknown:  # e.g. scheduler.shift (flow only) for a DDPM checkpoint
            target = str(cfg.model.scheduler.get("_target_", "?")).rsplit(".", 1)[-1]
            options = ", ".join(k for k in cfg.model.scheduler if k != "_target_")
            raise ConfigError.bad_value(f"scheduler.{unknown[0]}", f"the checkpoint's scheduler {target} has no "
                                        f"option {unknown[0]!r}", f"Its options: {options}.")
        cfg.model.scheduler = OmegaConf.merge(cfg.model.scheduler, scheduler_overrides)
        _check_scheduler(cfg.model.scheduler, scheduler_overrides, path)
    elif scheduler_overrides:  # a loader (model=diffusers) that builds its scheduler from a pipeline folder
        cfg.model.scheduler_overrides = scheduler_overrides
    if sampler is not None and not hasattr(sampler, "fn"):
        cfg.model.sampler = sampler
    given = {"sampler": sampler} if hasattr(sampler, "fn") and "sampler" in cfg.model else None
    module = instantiate_stored(cfg.model, path, "model", key, given=given)  # a given spec: the stored one not built
    if given is None and hasattr(sampler, "fn"):
        module.sampler = sampler
    module.run_config = ckpt["config"]
    module.checkpoint_path = str(path)
    chosen = [getattr(getattr(module, part, None), "grid", None) for part in ("scheduler", "sampler")]
    if "optimized" in chosen:
        module.grid_cache = checkpoint_grid_cache(path)
    module.train_images_seen = int(ckpt.get("train_images_seen", 0))
    module.checkpoint_global_step = int(ckpt.get("global_step", 0))
    module.condition.load_state_dict(ckpt)
    load_weights(module, ckpt, use_ema, path)
    module.eval()
    return module
