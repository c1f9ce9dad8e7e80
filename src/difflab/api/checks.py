"""Up-front checks of the entry points: every value a user gives is checked before the expensive work starts.

Each check raises a `difflab.errors` class whose one paragraph names the config key (or folder) and the fix.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from difflab.errors import ConfigError, UnwritableOutputError, user_error_in
from difflab.samplers import SamplerSpec
from difflab.utils.tensors import AUTOCAST

HYDRA_OWN = (".hydra",)  # what Hydra itself writes into a run folder before the task starts (with <task>.log)


def integer(value: Any, key: str, minimum: int | None = None, fix: str = "") -> int:
    """`value` as an int >= minimum; a ConfigError naming `key` otherwise (`abc`, 2.5, 0 for minimum 1)."""
    try:
        number = int(value)
        if not isinstance(value, (int, str)) and number != float(value):  # 2.5; exact for ints past 2^53 (seeds)
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError.bad_value(key, f"{value!r} is not an integer", fix) from None
    if minimum is not None and number < minimum:
        raise ConfigError.bad_value(key, f"{number} must be >= {minimum}", fix or f"Pass {key}={max(minimum, 1)} or more.")
    return number


def real(value: Any, key: str, low: float | None = None, high: float | None = None) -> float:
    """`value` as a finite float in [low, high]; a ConfigError naming `key` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError.bad_value(key, f"{value!r} is not a number", f"Pass a number, e.g. {key}=1.0.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError.bad_value(key, f"{value!r} is not a finite number", f"Pass a finite number, e.g. {key}=1.0.")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError.bad_value(key, f"{number} is outside {bounds}", f"Pass a value in {bounds}.")
    return number


def boolean(value: Any, key: str) -> bool:
    """`value` as a bool (true/false, also as text); a ConfigError naming `key` otherwise."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false"):
        return str(value).strip().lower() == "true"
    raise ConfigError.bad_value(key, f"{value!r} is not true or false", f"Pass {key}=true or {key}=false.")


def seed(value: Any, key: str = "seed") -> int:
    """A run seed: an integer in [0, 2^63), or -1 for a random one."""
    number = integer(value, key, fix=f"Pass an integer {key} >= 0, or {key}=-1 for a random seed.")
    if number < -1 or number >= 1 << 63:
        raise ConfigError.bad_value(key, f"{number} is outside [0, 2^63)",
                                    f"Pass an integer {key} >= 0, or {key}=-1 for a random seed.")
    return number


def _sampler_fields(node: Any, key: str) -> dict[str, Any]:
    """A `sampler` node's fields, with the numbers checked (a step count below 1 names `sampler.steps`, a non-number
    `grid_effort` or `dynamic_percentile` its key)."""
    fields = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}
    if fields.get("steps") is not None:
        fields["steps"] = integer(fields["steps"], f"{key}.steps", 1, f"Pass {key}.steps=20 (any count >= 1).")
    for name in ("grid_effort", "dynamic_percentile"):  # numbers; SamplerSpec checks their ranges
        if name in fields:
            fields[name] = real(fields[name], f"{key}.{name}")
    return fields


def sampler_spec(node: Any, key: str = "sampler") -> Any:
    """The SamplerSpec of a `sampler` config node, built before any loading (an unknown sampler or option is
    SamplerSpec's own ConfigError); None for null and for conf/sampler/own.yaml (the model's own sampler, whose
    changes are `own_sampler_changes`)."""
    if node is None or ("name" in node and node.get("name") is None):
        return None
    return SamplerSpec(**_sampler_fields(node, key))


def own_sampler_changes(node: Any, key: str = "sampler") -> dict[str, Any]:
    """What `sampler.steps=20` / `sampler.grid=karras` change of the model's own sampler when no `sampler=` is given
    (conf/sampler/own.yaml); {} otherwise."""
    if node is None or node.get("name", "") is not None:
        return {}
    return {k: v for k, v in _sampler_fields(node, key).items() if k != "name" and v is not None}


def scheduler(node: Any, key: str = "scheduler") -> Any:
    """The noise scheduler of a `scheduler` config node (None for null), built before data and model (it is cheap):
    a scheduler's own ConfigError passes through; any other bad value or unknown option names `key`."""
    if node is None:
        return None
    try:
        return instantiate(node)
    except InstantiationException as err:
        found = user_error_in(err)
        if found is not None:
            raise found from None
        cause = err.__cause__ if isinstance(err.__cause__, (TypeError, ValueError)) else None
        if cause is None:
            raise
        raise ConfigError.bad_value(key, str(cause), f"See conf/{key}/ for the options of each scheduler.") from None


def writable_folder(path: str | Path, key: str) -> Path:
    """Create the folder `path` (and parents) and prove that a file can be written in it; an
    UnwritableOutputError naming the folder and `key` otherwise."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UnwritableOutputError(f"Cannot write into the output folder '{folder}' (config key `{key}`): "
                                    f"{err.strerror or err}. Pass {key}=<a folder you can write to>.") from None
    return folder


def fresh_output(path: str | Path, key: str, overwrite: bool) -> Path:
    """A writable output folder that holds no earlier results (Hydra's own `.hydra/` and log file aside),
    unless `overwrite`; an UnwritableOutputError naming the folder, `key` and `overwrite=true` otherwise."""
    folder = writable_folder(path, key)
    earlier = sorted(p.name for p in folder.iterdir() if p.name not in HYDRA_OWN and not p.name.endswith(".log")
                     and not p.name.startswith(".write-test-"))
    if earlier and not overwrite:
        shown = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise UnwritableOutputError(f"The output folder '{folder}' (config key `{key}`) already holds files ({shown}); "
                                    f"nothing is overwritten. Pass another {key}=<folder>, or overwrite=true to "
                                    "replace them.")
    return folder


def inference_device(name: Any, key: str = "device") -> torch.device:
    """`device` (auto | cpu | cuda | cuda:N | mps) as a torch.device that exists on this machine."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError.bad_value(key, f"{name!r} is not a device", f"Use {key}=auto, cpu, cuda or cuda:<index>.") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError.bad_value(key, f"{name} is not available on this machine "
                                    f"({torch.cuda.device_count()} CUDA devices)", f"Use {key}=auto or {key}=cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError.bad_value(key, "mps is not available on this machine", f"Use {key}=auto or {key}=cpu.")
    return device


def precision(value: Any, key: str = "precision") -> str:
    """`precision` of sampling: 32 | bf16 | fp16 (autocast for the network; the sampler arithmetic stays float32/64)."""
    value = str(value)
    if value not in AUTOCAST:
        raise ConfigError.bad_value(key, f"{value!r} is not a precision", f"Use {key}=32, bf16 or fp16.")
    return value


def inference_precision(value: Any, device: torch.device, key: str = "precision") -> str:
    """`precision` (32 | bf16 | fp16) for sampling on `device`; fp16 autocast needs a CUDA device."""
    value = precision(value, key)
    if value == "fp16" and device.type != "cuda":
        raise ConfigError.bad_value(key, f"fp16 autocast needs a CUDA GPU and this run samples on {device.type}",
                                    f"Use {key}=bf16 or {key}=32 on {device.type}.")
    return value


def training_device(cfg: DictConfig) -> str:
    """The device type Lightning will train on ('cuda', 'mps' or 'cpu'); a ConfigError for an absent GPU."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    has_cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not has_cuda and not torch.backends.mps.is_available():
        raise ConfigError.bad_value("trainer.accelerator", f"{accelerator} but this machine has no GPU",
                                    "Use trainer=cpu (or trainer.accelerator=cpu / auto).")
    if accelerator == "cpu" or not (has_cuda or torch.backends.mps.is_available()):
        return "cpu"
    return "cuda" if has_cuda else "mps"


def training_precision(cfg: DictConfig) -> None:
    """Refuse a `trainer.precision` the training device cannot run (Lightning would silently run another)."""
    precision = str(cfg.trainer.get("precision"))
    device = training_device(cfg)
    if precision in ("16", "16-mixed") and device == "cpu":
        raise ConfigError.bad_value("trainer.precision", f"{precision} (float16 autocast) needs a CUDA GPU; on the CPU "
                                    "Lightning would silently train in bf16-mixed instead",
                                    "Use trainer.precision=bf16-mixed or 32-true on the CPU.")
    if precision.startswith("bf16") and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError.bad_value("trainer.precision", f"{precision} but this GPU has no bfloat16 support",
                                    "Use trainer.precision=16-mixed or 32-true.")


def downsampling(cfg: DictConfig) -> int:
    """The total downsampling of the model between `data.resolution` and its smallest feature map:
    the autoencoder's factor f (latent models) times 2^(levels - 1) of the network."""
    model = cfg.get("model") or {}
    ae = model.get("autoencoder")
    factor = int(ae.get("downsample_factor", 1)) if isinstance(ae, (dict, DictConfig)) else 1
    net = model.get("net")
    if isinstance(net, (dict, DictConfig)) and net.get("channel_mult") is not None:
        factor *= 2 ** (len(net.channel_mult) - 1)
    return factor


def data_resolution(cfg: DictConfig) -> None:
    """`data.resolution` must be a whole multiple of the model's downsampling; the message gives nearby values."""
    if cfg.get("data") is None or cfg.data.get("resolution") is None:
        return
    resolution = integer(cfg.data.resolution, "data.resolution", 1)
    factor = downsampling(cfg)
    if resolution % factor:
        lower, upper = resolution - resolution % factor, resolution - resolution % factor + factor
        nearby = f"data.resolution={lower} or {upper}" if lower > 0 else f"data.resolution={upper}"
        raise ConfigError.bad_value("data.resolution", f"{resolution} is not a multiple of {factor}, the model's total "
                                    "downsampling (autoencoder factor x 2^(levels of model.net.channel_mult - 1))",
                                    f"Use {nearby}, or fewer levels in model.net.channel_mult.")


def train_config(cfg: DictConfig) -> dict[str, Any]:
    """Everything `train.py` can check before building data, model and trainer; returns what it built on the way
    (the `sampler` spec and `scheduler`), for the model to take instead of building them again."""
    if not 0 <= integer(cfg.seed, "seed", 0, "Pass an integer seed in [0, 2^32).") < 1 << 32:
        raise ConfigError.bad_value("seed", f"{cfg.seed} is outside [0, 2^32) (the training RNGs take 32-bit seeds)",
                                    "Pass an integer seed in [0, 2^32).")
    max_steps = integer(cfg.trainer.max_steps, "trainer.max_steps", -1)
    if max_steps == 0:
        raise ConfigError.bad_value("trainer.max_steps", "0 trains nothing", "Pass trainer.max_steps=1 or more.")
    if cfg.get("data") is not None and cfg.data.get("batch_size") is not None:
        integer(cfg.data.batch_size, "data.batch_size", 1)
    data_resolution(cfg)
    training_precision(cfg)
    if cfg.get("sampler") is not None and cfg.sampler.get("name", "") is None:
        raise ConfigError.bad_value("sampler", "own is the model's own sampler of sample.py and evaluate.py, and a "
                                    "training run needs one of its own", "Pass sampler=<name> (e.g. sampler=ddpm), or "
                                    "leave sampler out for the model preset's.")
    # a sampler node without `_target_` holds fields for the model to complete (model=distill: the method's sampler)
    spec = sampler_spec(cfg.sampler) if cfg.get("sampler") is not None and "_target_" in cfg.sampler else None
    sched = scheduler(cfg.scheduler) if cfg.get("scheduler") is not None else None
    if spec is not None and sched is not None:
        spec.scheduler_for(sched)  # a `sampler.grid` this scheduler does not offer
    also = (cfg.get("metrics") or {}).get("also_sample") or {}
    for label, node in also.items():
        if not isinstance(node, (dict, DictConfig)) or "name" not in node:
            raise ConfigError.bad_value(f"metrics.also_sample.{label}", f"{node!r} is not a sampler", "Give sampler "
                                        f"fields, e.g. metrics.also_sample.{label}={{name: ddim, steps: 50}}.")
        key = f"metrics.also_sample.{label}"
        try:
            extra = sampler_spec(node, key)
        except ConfigError as err:  # SamplerSpec names `sampler...`: here the sampler lives under another key
            raise ConfigError(str(err).replace("`sampler", f"`{key}", 1)) from None
        if sched is not None:
            extra.scheduler_for(sched)
    optimizer = (cfg.get("model") or {}).get("optimizer")
    if isinstance(optimizer, (dict, DictConfig)) and optimizer.get("lr") is not None:
        real(optimizer.lr, "model.optimizer.lr", 0.0)
    writable_folder(cfg.paths.run_dir, "paths.run_dir")
    optimized_metric(cfg)
    return {key: value for key, value in (("sampler", spec), ("scheduler", sched)) if value is not None}


def optimized_metric(cfg: DictConfig) -> str | None:
    """`optimized_metric` (what train.py returns to a sweeper): a metric name this run will log at its end."""
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if not isinstance(name, str) or "/" not in name:
        raise ConfigError.bad_value("optimized_metric", f"{name!r} is not a logged metric's name",
                                    "Name one such as val/loss, or val/fid with a metric pass (metrics=fast|default).")
    trainer = cfg.trainer
    if name == "val/loss":
        every, steps = trainer.get("val_check_interval"), trainer.get("max_steps", -1)
        if trainer.get("limit_val_batches") == 0:
            raise ConfigError.bad_value("optimized_metric", "val/loss is never computed with trainer.limit_val_batches=0",
                                        "Validate on some batches, or optimize another metric.")
        if isinstance(every, int) and isinstance(steps, int) and 0 < steps < every:
            raise ConfigError.bad_value("optimized_metric", f"val/loss is computed every trainer.val_check_interval={every} "
                                        f"steps, so never in trainer.max_steps={steps}",
                                        f"Pass trainer.val_check_interval={steps} (or a divisor of it).")
    elif name.startswith("val/") and not (cfg.get("metrics") and cfg.metrics.get("enabled", True)
                                          and cfg.metrics.get("n_samples", 0)):
        raise ConfigError.bad_value("optimized_metric", f"{name} comes from the metric pass, which this run turns off "
                                    "(metrics=none)", "Pass metrics=fast or metrics=default, or optimize val/loss.")
    return name



def disk_room(folder: Path, n: int, shape: tuple[int, ...], key: str = "n") -> None:
    """Refuse to write `n` PNG images of `shape` (C, H, W) into `folder` when they would not fit on its disk (a PNG
    takes at most about C * H * W bytes): a ConfigError naming `key` with the estimate."""
    need = n * (int(torch.tensor(shape).prod()) + 1024)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ConfigError.bad_value(key, f"{n} images of shape {tuple(shape)} may take up to {need / 2**30:.1f} GiB, "
                                    f"and the disk of '{folder}' has {free / 2**30:.1f} GiB free",
                                    "Ask for fewer images, write them to another out_dir, or pass save_images=false.")


def metrics_scored(mcfg: Any) -> None:
    """An evaluation's metrics preset scores something (metrics=none is for training runs)."""
    scored = [m for m in ("fid", "kid", "inception_score", "lpips_diversity", "clip_score", "broken_rate")
              if getattr(mcfg, m)] + [name for name, on in mcfg.plugins.items() if on]
    if not scored and not mcfg.nll["enabled"]:
        raise ConfigError.bad_value("metrics", "this preset turns every metric off (metrics=none is for training runs)",
                                    "Pass metrics=fast, default or full (or metrics=nll for the likelihood).")
