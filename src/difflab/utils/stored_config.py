"""A checkpoint's stored config is data: the `_target_`s it may name, checked before anything of it is built.

A difflab checkpoint carries the resolved config of its run, and loading it rebuilds the model (and, for
image inputs, the data module) from that config. A crafted config could name any callable as a `_target_`
(`torch.load` with `weights_only: false`, `torch.hub.load` of a local `hubconf.py`, `os.system`, ...), so
`instantiate_stored` first walks the whole tree and refuses it unless every target is

- a class defined in one of difflab's model-building packages (`STORED_PACKAGES`: networks, schedulers,
  samplers, conditions, Lightning modules, data modules, metrics, callbacks), found through its module path
  (never through a module that difflab imports: `difflab.lit.os.system` is not a difflab class);
- a difflab function on the explicit list `STORED_FUNCTIONS` (difflab's own safe loaders and schedules,
  which read weights as data only: `weights_only=True`, safetensors, `local_files_only`);
- one of the pure constructors of `EXTERNAL_CONSTRUCTORS` (torch's optimizers and learning-rate schedules).

Anything else (a loader, the hub, `eval`, a subprocess, `functools.partial`, `hydra.utils.get_method`, a
non-string or interpolated target, at any depth, inside `_args_` too) is one `IncompatibleCheckpointError`
naming the file, the key and the target; nothing of the config has run by then.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from difflab.errors import IncompatibleCheckpointError

# difflab packages whose classes a stored config may build (the front ends and utilities are not among them)
STORED_PACKAGES = frozenset({"nets", "diffusion", "samplers", "conditions", "lit", "data", "metrics", "callbacks"})
# difflab functions a stored config may call, by their defining module and qualified name
STORED_FUNCTIONS = frozenset({
    "difflab.lit.optim.warmup_schedule",
    "difflab.lit.autoencoder.lpips_loss",
    "difflab.nets.autoencoder.load_kl_autoencoder",       # weights_only load; its own stored net config checked here
    "difflab.nets.autoencoder.pretrained_autoencoder",    # diffusers AutoencoderKL, local files unless allowed
    "difflab.nets.text.CLIPTextEncoder.from_pretrained",  # transformers CLIP, local_files_only
    "difflab.lit.stable_diffusion.load_stable_diffusion",  # model=sd: a diffusers folder, local files only
    "difflab.lit.pipelines.load_diffusers_pipeline",     # model=diffusers: a diffusers folder, local files only
    "difflab.lit.lora.lora_model",                       # model=lora: its base through load_stable_diffusion or
                                                         # load_module (checked here again), then peft adapters
})
# outside difflab: pure constructors only (they read no file and import nothing by name)
EXTERNAL_CONSTRUCTORS = frozenset({
    "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop", "torch.optim.Adagrad",
    "torch.optim.lr_scheduler.OneCycleLR", "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.LinearLR", "torch.optim.lr_scheduler.ConstantLR", "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.ExponentialLR", "torch.optim.lr_scheduler.LambdaLR",
})


class UntrustedTargetError(IncompatibleCheckpointError):
    """A checkpoint's stored config names a `_target_` that a checkpoint may not build."""


def _locate_difflab(target: str) -> Any | None:
    """The object a dotted `difflab....` name denotes, walking submodules of difflab and then attributes; None when
    the walk leaves difflab's own code (through an imported module) or the name denotes nothing."""
    parts = target.split(".")
    if parts[0] != "difflab" or not all(p.isidentifier() for p in parts):
        return None
    obj: Any = importlib.import_module("difflab")
    name = "difflab"
    for part in parts[1:]:
        if isinstance(obj, types.ModuleType) and obj.__name__ == name and hasattr(obj, "__path__"):
            sub = f"{name}.{part}"
            if importlib.util.find_spec(sub) is not None:  # a submodule of a difflab package
                obj, name = importlib.import_module(sub), sub
                continue
        obj = getattr(obj, part, None)
        if obj is None or isinstance(obj, types.ModuleType):  # e.g. difflab.lit.checkpoint.torch: not difflab's code
            return None
    return obj


def canonical_name(obj: Any) -> str:
    """`<defining module>.<qualified name>` of a class or function (bound methods: their function's)."""
    func = getattr(obj, "__func__", obj)
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}"


def trusted_object(target: Any) -> Any | None:
    """The object `target` names when a stored config may build it (module docstring); None otherwise."""
    if not isinstance(target, str):
        return None
    if target in EXTERNAL_CONSTRUCTORS:
        module, _, name = target.rpartition(".")
        return getattr(importlib.import_module(module), name)
    obj = _locate_difflab(target)
    if obj is None:
        return None
    name = canonical_name(obj)
    if isinstance(obj, type):
        module = name.split(".")
        return obj if module[0] == "difflab" and len(module) > 2 and module[1] in STORED_PACKAGES else None
    return obj if callable(obj) and name in STORED_FUNCTIONS else None


def check_stored_targets(node: Any, path: str | Path, where: str = "config", key: str = "ckpt") -> None:
    """Refuse a stored config that names any target outside the trusted ones (module docstring), at any depth;
    nothing is built or called."""
    if isinstance(node, dict):
        if "_target_" in node and trusted_object(node["_target_"]) is None:
            raise UntrustedTargetError(
                f"Refusing to build the model of '{path}' (config key `{key}`): its stored config names "
                f"`_target_: {node['_target_']}` at {where}, which a checkpoint may not build (only difflab's own "
                "classes and a short list of pure constructors); nothing of it was run. Use a checkpoint written by "
                "difflab, or fix the config stored in it.")
        for name, value in node.items():
            check_stored_targets(value, path, f"{where}.{name}", key)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_stored_targets(value, path, f"{where}[{i}]", key)


def stored_target(node: dict[str, Any], path: str | Path, where: str, key: str = "ckpt") -> Any:
    """The trusted object that the stored config `node` names as its `_target_` (checked, nothing built)."""
    check_stored_targets(node, path, where, key)
    return trusted_object(node.get("_target_"))


def instantiate_stored(node: Any, path: str | Path, where: str, key: str = "ckpt",
                       given: dict[str, Any] | None = None) -> Any:
    """`hydra.utils.instantiate` of a config read from a checkpoint, after `check_stored_targets` of all of it.

    Interpolations are resolved first and the resolved tree is what is both checked and built, so a `${...}` cannot
    bring in a target that the check did not see. `given` objects replace their keys of the top node (passed as they
    are, e.g. the caller's `SamplerSpec`, which is then not built from the stored config at all)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    check_stored_targets(plain, path, where, key)
    if not given:
        return instantiate(plain)
    plain = {k: v for k, v in plain.items() if k not in given}
    return instantiate(plain, _partial_=True)(**given)
