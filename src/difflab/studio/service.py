"""What the studio does, without the web page: open a model, sample it as sample.py would (through the Python
API), read the runs.

`Studio` holds the served folders, the model cache and the output folder; `difflab.studio.app` wires it to
Gradio. Every method takes plain values and raises `difflab.errors.UserError` for a user's mistake.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from difflab.api import checks
from difflab.api.config import sampler_spec
from difflab.api.overrides import value
from difflab.api.pnginfo import png_request
from difflab.api.sampling import SampleOptions
from difflab.api.xyz import parse_values, run_xyz
from difflab.conditions import Input
from difflab.diffusion.schedules import GRIDS
from difflab.errors import ConfigError, UserError
from difflab.samplers.aliases import resolve as resolve_sampler
from difflab.studio.files import Folders, png
from difflab.studio.forms import PngFields, SampleForm, compose_sample
from difflab.studio.measure import is_regressor, predict_values, regressor_values
from difflab.studio.models import ModelCache

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """A generation stopped by the user (raised from the samplers' step callback)."""


@dataclass
class ModelInfo:
    """What the Sample tab shows for a loaded model: its defaults and which condition inputs it takes."""

    path: str
    describe: str
    sampler: str
    steps: int | None
    grids: list[str]
    guided: bool
    guidance_scale: float | None
    num_classes: int | None = None
    columns: list[tuple[str, float, float]] = field(default_factory=list)  # (name, mean, std) in raw units
    prompt: bool = False
    image_size: int = 0
    inputs: list[Input] = field(default_factory=list)  # what the condition declares (the page's widgets)

    @property
    def measurable(self) -> bool:
        """Whether the Measure tab can read this model's values from images (a vector-conditioned model)."""
        return bool(self.columns)


@dataclass
class Result:
    """One generation: its images (uint8 [H, W, C] each), the samples.json record, folder and command."""

    images: list[np.ndarray]
    record: dict[str, Any]
    out_dir: Path
    command: str
    seed: int


def model_info(module: Any, path: str) -> ModelInfo:
    """The Sample tab's view of a loaded module (sampler, steps, grids, condition inputs)."""
    condition, spec = module.condition, module.sampler
    grids = list(getattr(type(module.scheduler), "grids", GRIDS))
    stats = getattr(condition, "stats", None)
    return ModelInfo(
        path=path, describe=condition.describe(), sampler=spec.name, steps=spec.steps, grids=grids,
        guided=condition.guided, guidance_scale=float(module.guidance_scale) if condition.guided else None,
        num_classes=getattr(condition, "num_classes", None) if "class_label" in condition.inputs else None,
        columns=list(zip(stats.columns, stats.mean, stats.std)) if stats is not None and "cond" in condition.inputs
        else [],
        prompt="prompt" in condition.inputs, image_size=int(module.image_shape[-1]), inputs=condition.widgets())


class Studio:
    """The served folders, one bounded cache of loaded models, and the folder generations are written to."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.folders = Folders.of(cfg.runs_dir, list(cfg.ckpt_dirs))
        self.out_dir = checks.writable_folder(cfg.out_dir, "out_dir").resolve()
        self.cache = ModelCache(cfg.max_models)
        self.batch_size = checks.integer(cfg.batch_size, "batch_size", 1)
        self.max_images = checks.integer(cfg.max_images, "max_images", 1)
        self._count = 0
        self._lock = threading.Lock()  # one generation at a time (a cancelled one finishes its step first)

    def extra_overrides(self) -> list[str]:
        """The studio's settings that differ from sample.yaml's defaults, passed on to every command."""
        out = []
        for key, default in (("device", "auto"), ("precision", "32"), ("use_ema", "True")):
            if str(self.cfg[key]) != default:
                out.append(f"{key}={str(self.cfg[key]).lower() if key == 'use_ema' else self.cfg[key]}")
        return out

    def checkpoints(self) -> list[tuple[str, str]]:
        """(label, path) of every checkpoint and Stable Diffusion folder under the checkpoint folders."""
        return [(self.folders.label(p), str(p)) for p in self.folders.checkpoints()]

    def default_checkpoint(self) -> str | None:
        """The model the Sample tab opens with: the newest `last.ckpt`, else the newest checkpoint or folder."""
        found = self.folders.checkpoints()  # newest first
        return str(next((p for p in found if p.name == "last.ckpt"), found[0] if found else "")) or None

    def usual_steps(self, path: str, sampler: str | None) -> int:
        """The step count a sampler is usually run with on a model: its preset's (20 for DPM++ 2M), the model's own
        for its own sampler (and for presets that take the scheduler's full grid)."""
        info = self.open(path)
        if not sampler or resolve_sampler(sampler)[0] == info.sampler:
            return int(info.steps or 1000)
        return int(sampler_spec(sampler).steps or info.steps or 1000)

    def model_config(self, path: str) -> DictConfig:
        """sample.py's config for a model path (checked to lie inside the served folders)."""
        form = SampleForm(model=str(self.folders.check(path, "checkpoint")), seed=0, extra=self.extra_overrides())
        return compose_sample(form.overrides(), self.out_dir / "next")

    def open(self, path: str) -> ModelInfo:
        """Load a model into the cache (or find it there) and describe it."""
        if not str(path or "").strip():
            raise ConfigError("Pick a checkpoint first (or type the path of a .ckpt file or Stable Diffusion folder).")
        cfg = self.model_config(path)
        return model_info(self.cache.load(cfg).module, str(self.folders.check(path, "checkpoint")))

    def _next_folder(self) -> Path:
        self._count += 1
        while (self.out_dir / f"{self._count:04d}").exists():
            self._count += 1
        return self.out_dir / f"{self._count:04d}"

    def generate(self, form: SampleForm, progress: Callable[[int, int], None] | None = None,
                 cancelled: threading.Event | None = None) -> Result:
        """Sample `form` as `python sample.py <its overrides>` would (`SampleOptions.from_config`,
        `DiffusionModel.draw`) with the cached model; `progress` gets (images done, of all: fractions while a batch is
        sampled), `cancelled` stops the samplers at their next step (`Cancelled`)."""
        form.model = str(self.folders.check(form.model, "checkpoint"))
        checks.integer(form.n, "n", 1)
        if int(form.n) > self.max_images:
            raise ConfigError.bad_value("n", f"{int(form.n)} images is more than this studio draws at once "
                                        f"({self.max_images})", f"Ask for at most {self.max_images}, or start the "
                                        f"studio with max_images={int(form.n)}.")
        with self._lock:
            out_dir = self._next_folder()
            if form.init_image:
                form.init_image = str(self._keep_input(form.init_image, out_dir.name))
            if int(form.n) > self.batch_size:  # the command batches as the studio did (rounding of batched convs)
                form.extra = [*form.extra, f"batch_size={self.batch_size}"]
            cfg = compose_sample(form.overrides(), out_dir)
            options = SampleOptions.from_config(cfg)
            out = checks.fresh_output(cfg.out_dir, "out_dir", False)
            samples = self.cache.load(cfg).draw(options, callback=_step_callback(progress, cancelled))
            samples.write_files(out, save_images=bool(cfg.save_images))
        images = [png(p) for p in sorted((out / "images").glob("*.png"))]
        return Result(images, samples.record, out, form.command(), options.seed)

    def read_png(self, path: str) -> PngFields:
        """The Sample tab's fields of a dropped PNG (its `parameters` chunk: difflab's request or the web UI's
        settings); its checkpoint when this studio serves it."""
        found = png_request(path, key="PNG")
        ckpt = found.request.get("ckpt")
        try:
            model = str(self.folders.check(ckpt, "checkpoint")) if ckpt else None
        except UserError:
            model = None
        return PngFields.of(found, model)

    def xyz(self, form: SampleForm, axes: list[tuple[str | None, str]],
            progress: Callable[[int, int], None] | None = None, cancelled: threading.Event | None = None) -> Result:
        """An X/Y/Z grid of `form` over `axes` ((sample.py key, values as typed) each; X, Y, Z in order) as
        `python sample.py <form's overrides> xyz=...` draws it (`difflab.api.xyz.run_xyz`); its images are the
        labelled grids, one per Z value."""
        form.model = str(self.folders.check(form.model, "checkpoint"))
        spec = {str(key).strip(): parse_values(text) for key, text in axes if key and str(key).strip()}
        if not spec:
            raise ConfigError.bad_value("xyz", "no axis was given", "Pick a key (e.g. sampler.steps) and type its "
                                        "values (e.g. 5, 10, 20) for X, and Y and Z if wanted.")
        cells = math.prod(len(v) for v in spec.values()) * int(form.n)
        if cells > self.max_images:
            raise ConfigError.bad_value("xyz", f"{cells} images (cells x images per cell) is more than this studio "
                                        f"draws at once ({self.max_images})", "Use fewer values or images per cell, or "
                                        f"start the studio with max_images={cells}.")
        with self._lock:
            out_dir = self._next_folder()
            form.extra = [*form.extra, f"xyz={value(spec)}"]
            cfg = compose_sample(form.overrides(), out_dir)
            out = checks.fresh_output(cfg.out_dir, "out_dir", False)
            record = run_xyz(cfg, out, self.cache.load, callback=_step_callback(progress, cancelled))
        images = [png(p) for p in record.pop("grid_files")]
        return Result(images, {k: v for k, v in record.items() if k != "out_dir"}, out, form.command(),
                      int(record["seed"]))

    def _keep_input(self, upload: str, name: str) -> Path:
        """An uploaded image copied (bytes unchanged) into <out_dir>/inputs, where its command can find it again."""
        source = Path(upload)
        if not source.is_file():
            raise ConfigError(f"The uploaded image '{upload}' is gone: upload it again.")
        target = self.out_dir / "inputs" / f"{name}-{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def measure(self, path: str, images: list[str]) -> tuple[list[str], list[list[Any]]]:
        """(headers, one row per image: file name then the values read in raw units) by a `model=regressor`
        checkpoint, or by the condition regressor of a vector-conditioned model."""
        if not str(path or "").strip():
            raise ConfigError("Pick a checkpoint first: a condition regressor (model=regressor) or a "
                              "vector-conditioned model.")
        checked = self.folders.check(path, "checkpoint")
        if is_regressor(checked):
            values = regressor_values(checked, images)
        else:
            model = self.cache.load(self.model_config(path))
            values = predict_values(model, images, self.cfg.measure.cache_dir, epochs=int(self.cfg.measure.epochs))
        columns = list(values[0]) if values else []
        return ["image", *columns], [[Path(p).name, *(round(v[c], 4) for c in columns)] for p, v in zip(images, values)]


def _step_callback(progress: Callable[[float, float], None] | None,
                   cancelled: threading.Event | None) -> Callable[[dict[str, Any]], None]:
    """The samplers' step hook: passes on sample.py's progress count (images done, of all) and raises `Cancelled`
    once asked to."""

    def callback(info: dict[str, Any]) -> None:
        if cancelled is not None and cancelled.is_set():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(float(info["done"]), float(info["total"]))

    return callback
