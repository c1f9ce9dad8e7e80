"""Sampling a loaded diffusion model: what `DiffusionModel.sample` / `edit` and `python sample.py` run.

`SampleOptions` holds every input of a request under the names of conf/sample.yaml's keys, and checks them when it
is made (before any model is loaded or image drawn): a bad value is a ConfigError naming its key. `draw` then
parses the conditions, builds the edit (img2img, inpainting, interpolation), samples batch by batch with per-image
seeds (image i depends on (seed, i) alone, so a batch already on disk is never drawn again: `done`), reads vector
conditions back with a regressor, and returns `Samples`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from difflab.api import checks, readback
from difflab.api.images import load_image, run_data
from difflab.api.samples import Samples
from difflab.conditions import INPUT_KEYS, Requests
from difflab.errors import ConfigError
from difflab.lit.lora import apply_loras
from difflab.nets.lora import parse_lora_list
from difflab.samplers import (
    Edit,
    SamplerSpec,
    StackedGenerator,
    is_deterministic,
    sample_seeds,
    slerp,
)
from difflab.samplers.base import StepCallback
from difflab.utils.progress import Progress
from difflab.utils.tensors import autocast_for

log = logging.getLogger(__name__)

MODES = ("generate", "img2img", "inpaint", "interpolate")
Sink = Callable[[Tensor, list[int]], None]  # (images [B, C, H, W] in [-1, 1], their indices), as each batch is made


def resolve_seed(seed: Any, key: str = "seed") -> int:
    """The run seed (an integer in [0, 2^63)); -1 picks a random one, to be recorded."""
    seed = checks.seed(seed, key)
    if seed == -1:
        seed = random.SystemRandom().randrange(1 << 63)
        log.info("seed=-1: using seed %d", seed)
    return seed


@dataclass
class SampleOptions:
    """One sampling request, checked when made. `sampler` None keeps the model's own sampler; `seed` -1 is resolved
    to a random seed here (and recorded); the condition keys mean what they mean in conf/sample.yaml."""

    n: int = 4
    sampler: SamplerSpec | None = None
    seed: int = 0
    batch_size: int = 64
    guidance_scale: float | None = None
    guidance_rescale: float | None = None
    class_label: Any = None
    cond: Any = None
    cond_csv: str | None = None
    sweep: Any = None
    sweep_seeds: int = 4
    prompt: str | None = None
    negative_prompt: str | None = None
    regressor: str | None = None
    mode: str = "generate"
    init_image: Any = None
    mask: Any = None
    strength: float = 0.6
    interpolate_between: Any = (0, 1)
    precision: str = "32"
    lora: Any = None                      # LoRA files merged for this request: [path:weight, ...] or (path, weight)
    extra: dict[str, Any] = field(default_factory=dict)  # what else samples.json records (ckpt paths, cond_csv, ...)

    def __post_init__(self) -> None:
        self.n = checks.integer(self.n, "n", 1)
        self.batch_size = checks.integer(self.batch_size, "batch_size", 1)
        if self.guidance_scale is not None:
            self.guidance_scale = checks.real(self.guidance_scale, "guidance_scale", 0.0)
        if self.guidance_rescale is not None:
            self.guidance_rescale = checks.real(self.guidance_rescale, "guidance_rescale", 0.0, 1.0)
        if self.mode not in MODES:
            raise ConfigError.bad_value("mode", f"unknown mode {self.mode!r}", f"Use mode=<one of {', '.join(MODES)}>.")
        if self.mode == "img2img":
            self.strength = checks.real(self.strength, "strength", 0.0, 1.0)
        if self.mode == "interpolate":
            pair = list(self.interpolate_between) if isinstance(self.interpolate_between, (list, tuple)) else []
            if len(pair) != 2:
                raise ConfigError.bad_value("interpolate_between", f"{self.interpolate_between!r} is not two image "
                                            "indices", "Pass interpolate_between=[0,1].")
            self.interpolate_between = tuple(checks.integer(i, "interpolate_between", 0) for i in pair)
        self.precision = checks.precision(self.precision)
        self.lora = parse_lora_list(self.lora)  # checked before any loading: a malformed entry names `lora`
        self.seed = resolve_seed(self.seed)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SampleOptions:
        """The request of a composed sample.py config (conf/sample.yaml's keys; the sampler node resolved to a
        `SamplerSpec` here, once)."""
        between = cfg.get("interpolate_between")
        return cls(
            n=cfg.n, sampler=checks.sampler_spec(cfg.get("sampler")), seed=cfg.seed, batch_size=cfg.batch_size,
            guidance_scale=cfg.get("guidance_scale"), guidance_rescale=cfg.get("guidance_rescale"),
            class_label=cfg.get("class_label"), cond=cfg.get("cond"), cond_csv=cfg.get("cond_csv"),
            sweep=cfg.get("sweep"), sweep_seeds=cfg.get("sweep_seeds", 1), prompt=cfg.get("prompt"),
            negative_prompt=cfg.get("negative_prompt"), regressor=cfg.get("regressor"),
            mode=str(cfg.get("mode", "generate")), init_image=cfg.get("init_image"), mask=cfg.get("mask"),
            strength=cfg.get("strength", 0.6), precision=str(cfg.precision),
            lora=OmegaConf.to_container(cfg.lora) if OmegaConf.is_list(cfg.get("lora")) else cfg.get("lora"),
            interpolate_between=OmegaConf.to_container(between) if OmegaConf.is_list(between) else between)

    def condition_inputs(self) -> dict[str, Any]:
        """The condition-related inputs given (None when not), for `Condition.parse` / `refuse_foreign`."""
        return {**{key: getattr(self, key, None) for key in INPUT_KEYS}, "sweep_seeds": self.sweep_seeds}


def check_memory(n: int, shape: tuple[int, ...], key: str = "n") -> None:
    """Refuse a request whose images would not fit in memory (they are held as float32 until written)."""
    need = n * 4 * int(torch.tensor(shape).prod())
    have = psutil.virtual_memory().available
    if need > have // 2:
        raise ConfigError.bad_value(key, f"{n} images of shape {tuple(shape)} take {need / 2**30:.1f} GiB as float32, "
                                    f"more than half the {have / 2**30:.1f} GiB of memory available",
                                    f"Ask for fewer images per command (at most about {have // 2 // max(1, need // n)}), "
                                    "and run it several times with other seeds.")


def build_edit(module: Any, options: SampleOptions, n: int) -> tuple[Edit | None, dict[str, Any]]:
    """The `Edit` of the request's mode: img2img / inpaint from `init_image` (preprocessed by the run's data module,
    see `load_image`), interpolate between two noises; and what samples.json records about the inputs."""
    if options.mode == "generate":
        return None, {}
    channels, resolution = module.image_shape[0], module.image_shape[-1]
    if options.mode == "interpolate":
        spec = options.sampler or module.sampler
        if not is_deterministic(spec):
            raise ConfigError.bad_value("sampler", f"mode=interpolate needs a deterministic sampler, not "
                                        f"{spec.name} {spec.knobs}", "Use sampler=ddim (eta=0), euler, heun, dpmpp_2m or ode.")
        a, b = options.interpolate_between
        z = StackedGenerator(sample_seeds(options.seed, 1, a) + sample_seeds(options.seed, 1, b)).randn(
            (2, *module.latent_shape))  # latent models: noise in latent shape
        return Edit(noise=slerp(z[0], z[1], torch.linspace(0, 1, n))), {"interpolate_between": [a, b]}
    data = run_data(module)
    init = _image(options.init_image, "init_image", data, channels, resolution).expand(n, -1, -1, -1)
    record = {"init_image": _name(options.init_image), "strength": float(options.strength),
              "mask": _name(options.mask), "preprocessing": data.preprocessing() if data is not None else
              {"resolution": resolution, "center_crop": True, "resize": "bicubic"}}
    if options.mode == "img2img":
        return Edit(init=init, strength=options.strength), record
    mask = _image(options.mask, "mask", data, 1, resolution)  # white (1) = regenerate
    keep = (mask < 0).float().expand(n, channels, -1, -1)
    return Edit(init=init, strength=1.0, mask=keep), {**record, "strength": 1.0}


def _image(value: Any, key: str, data: Any, channels: int, resolution: int) -> Tensor:
    """An edit input: an image file (preprocessed as the run's training images), or a tensor [C, H, W] / [1, C, H, W]
    already in the model's range [-1, 1]."""
    if isinstance(value, Tensor):
        image = value if value.ndim == 4 else value[None]
        if tuple(image.shape[1:]) != (channels, resolution, resolution):
            raise ConfigError.bad_value(key, f"a tensor of shape {tuple(value.shape)}, and the model takes "
                                        f"[{channels}, {resolution}, {resolution}] images", "Pass an image file, or a "
                                        "tensor of the model's image shape in [-1, 1].")
        return image[:1].float()
    return load_image(None if value is None else str(value), key, data, channels, resolution)


def _name(value: Any) -> Any:
    """How samples.json names an edit input: the file as given, or "tensor"."""
    return "tensor" if isinstance(value, Tensor) else value


def negative_condition(module: Any, negative_prompt: str | None) -> Tensor | None:
    """Guidance's unconditional branch when a negative prompt is given ([1, L, D]); None = the null condition."""
    return module.condition.to_net([negative_prompt]) if negative_prompt else None


def pending(groups: list[list[int]], done: Mapping[int, Tensor]) -> list[list[int]]:
    """The groups (batches of image indices) still to draw: a group whose images are all `done` is skipped, except
    that the last one is drawn again when all are done (it gives the NFE the record states)."""
    left = [g for g in groups if not all(i in done for i in g)]
    return left or groups[-1:]


def draw(module: Any, options: SampleOptions, *, callback: StepCallback | None = None, sink: Sink | None = None,
         done: Mapping[int, Tensor] | None = None, record: dict[str, Any] | None = None) -> Samples:
    """Sample the request with `module` (on its device): images batch by batch, each handed to `sink` as it is made;
    indices in `done` (images already made, e.g. on disk) are taken as they are. `record` adds to samples.json."""
    checks.inference_precision(options.precision, torch.device(module.device))
    loras = apply_loras(module, options.lora).applied  # this request's set (none restores the model's own weights)
    condition = module.condition
    requests = condition.parse(options.condition_inputs(), options.n)  # before sampling: inputs that mean nothing stop
    sweep = requests.sweep  # sweep=: noise-major images, `sweep.count` per row
    reader = readback.load_reader(options.regressor, condition.stats, sweep) if options.regressor else None
    n = len(requests) or options.n  # cond_csv: one image per row; sweep: seeds x count
    check_memory(n, module.image_shape)
    edit, edit_record = build_edit(module, options, sweep.seeds if sweep is not None else n)
    spec = module.sampling_spec(options.sampler)
    progress = Progress("sampling", n, "images")
    with autocast_for(torch.device(module.device), options.precision):
        uncond = negative_condition(module, options.negative_prompt)
        kwargs = {"sampler": options.sampler, "guidance_scale": options.guidance_scale, "progress": progress,
                  "guidance_rescale": options.guidance_rescale, "callback": callback,
                  **({"uncond": uncond} if uncond is not None else {})}
        images, nfe = _generate(module, requests, n, options, edit, kwargs, sink, done or {})
    progress.close()
    rows, measured, plots = condition.rows(requests), {}, {}
    if reader is not None:
        readings, measured, plot = readback.read_back(reader, options.regressor, images, requests, condition.stats)
        rows = [{**row, **reading} for row, reading in zip(rows, readings)]
        plots = {"sweep.png": plot} if plot is not None else {}
    guided = condition.guided
    full = {
        **(record or {}), "n": n, "seed": options.seed, "nfe": nfe, "sampler": spec.record(),
        "scheduler": repr(module.scheduler), "precision": options.precision, "device": str(module.device),
        "guidance_scale": _given_or(options.guidance_scale, module.guidance_scale) if guided else None,
        **({"guidance_rescale": _given_or(options.guidance_rescale, module.guidance_rescale)} if guided else {}),
        "condition": condition.kind, **condition.record(requests), **options.extra,
        **({"cond_csv": str(Path(str(options.cond_csv)).expanduser().resolve())} if options.cond_csv else {}),
        **({"measured": measured} if measured else {}),
        **({"negative_prompt": options.negative_prompt} if options.negative_prompt else {}),
        "mode": options.mode, **edit_record, **({"lora": loras} if loras else {}),
    }
    return Samples(images, full, rows, sweep.count if sweep is not None else None, plots)


def _generate(module: Any, requests: Requests, n: int, options: SampleOptions, edit: Edit | None,
              kwargs: dict[str, Any], sink: Sink | None, done: Mapping[int, Tensor]) -> tuple[Tensor, int]:
    """All n images [n, C, H, W]: a sweep value by value (every value from the same `sweep_seeds` noises), else
    batch by batch; (images, NFE per image)."""
    cond = module.condition.to_net(requests.values)
    sweep, nfe = requests.sweep, 0
    images: dict[int, Tensor] = dict(done)
    if sweep is not None:  # noise-major: image r * count + j is noise r at value j
        groups = [[r * sweep.count + j for r in range(sweep.seeds)] for j in range(sweep.count)]
        for group in pending(groups, done):
            j = group[0] % sweep.count
            made, nfe = module.generate(sweep.seeds, seed=options.seed, cond=cond[j :: sweep.count],
                                        batch_size=options.batch_size, edit=edit, **kwargs)
            _keep(images, group, made, sink)
    else:
        groups = [list(range(start, min(start + options.batch_size, n))) for start in range(0, n, options.batch_size)]
        for group in pending(groups, done):
            start, b = group[0], len(group)
            part = None if edit is None else edit.rows(start, b, torch.device("cpu"))
            made, nfe = module.generate(b, seed=options.seed, batch_size=b, first_index=start, edit=part,
                                        cond=None if cond is None else cond[start : start + b], **kwargs)
            _keep(images, group, made, sink)
    return torch.stack([images[i] for i in range(n)]), nfe


def _keep(images: dict[int, Tensor], group: list[int], made: Tensor, sink: Sink | None) -> None:
    for i, image in zip(group, made):
        images[i] = image
    if sink is not None:
        sink(made, group)


def _given_or(value: Any, default: Any) -> Any:
    """The value given, or the model's default when it was not given (None)."""
    return default if value is None else value
