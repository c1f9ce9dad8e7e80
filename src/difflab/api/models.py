"""`difflab.load(path)`: a model object for a difflab checkpoint, a diffusers pipeline folder, a Stable Diffusion
folder or a regressor checkpoint, with the checks of every command (the checkpoint read as data, its stored
config built only from trusted targets; clear errors naming the file).

    model = difflab.load("runs/train/<run>/checkpoints/last.ckpt")
    samples = model.sample(16, sampler="DPM++ 2M Karras", steps=20, seed=0)
    samples.grid().save("grid.png")

`DiffusionModel` samples (`sample`, `edit`), scores (`evaluate`) and exports (`export`); `Regressor` reads values
from images (`predict`). `.module` is the LightningModule underneath.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from difflab.api import checks
from difflab.api.config import group_object, metrics_config, sampler_spec
from difflab.api.evaluating import evaluate, evaluated_as, reference_data
from difflab.api.exporting import export
from difflab.api.images import PREPROCESS, read_images, run_data
from difflab.api.samples import Samples
from difflab.api.sampling import SampleOptions, Sink, draw, resolve_seed
from difflab.errors import ConfigError
from difflab.evaluation.suite import MetricsConfig, Networks
from difflab.lit.checkpoint import CheckpointNotFoundError, folder_hint, load_module, read_checkpoint, stored_model_class
from difflab.lit.lora import apply_loras
from difflab.lit.pipelines import load_diffusers_pipeline
from difflab.lit.regressor import RegressorModule, load_regressor
from difflab.lit.stable_diffusion import load_stable_diffusion
from difflab.samplers import SamplerSpec
from difflab.samplers.base import StepCallback
from difflab.samplers.grids import checkpoint_grid_cache
from difflab.utils.images import write_png

SamplerArg = str | SamplerSpec | Mapping[str, Any] | None


class DiffusionModel:
    """A diffusion model ready to sample: a difflab checkpoint, or a diffusers / Stable Diffusion folder."""

    def __init__(self, module: Any, source: str | None = None, *, use_ema: bool = True,
                 record: Mapping[str, Any] | None = None) -> None:
        self.module = module.eval()
        self.source, self.use_ema = source, use_ema
        self._record = dict(record or {})  # what samples.json says of the model (ckpt, pipeline, use_ema)

    def __repr__(self) -> str:
        return f"DiffusionModel({self.source!r}, {self.condition.describe()}, sampler={self.sampler.name})"

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return torch.device(self.module.device)

    def to(self, device: str | torch.device) -> DiffusionModel:
        """Move the model to `device` (auto | cpu | cuda | cuda:N | mps, checked to exist here)."""
        self.module.to(checks.inference_device(device))
        return self

    @property
    def condition(self) -> Any:
        """What the model is conditioned on (`difflab.conditions`): its inputs, classes or columns."""
        return self.module.condition

    @property
    def sampler(self) -> SamplerSpec:
        """The model's own sampler (what `sample` uses without `sampler=`)."""
        return self.module.sampler

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it makes."""
        return tuple(self.module.image_shape)

    def sample(self, n: int = 4, *, sampler: SamplerArg = None, steps: int | None = None, grid: str | None = None,
               seed: int = 0, batch_size: int = 64, guidance_scale: float | None = None,
               guidance_rescale: float | None = None, class_label: int | None = None,
               cond: Mapping[str, float] | str | None = None, cond_csv: str | Path | None = None,
               sweep: Mapping[str, Any] | str | None = None, sweep_seeds: int = 4, prompt: str | None = None,
               negative_prompt: str | None = None, regressor: str | Path | None = None, precision: str = "32",
               lora: Sequence[Any] | None = None, callback: StepCallback | None = None) -> Samples:
        """Draw `n` images. `sampler`: a name ("dpmpp_2m", "DPM++ 2M Karras"), a `SamplerSpec` or its fields, with
        `steps` / `grid` overriding it (default: the model's own sampler). Image i depends only on (`seed`, i).

        Conditions as on the command line: `class_label`, `cond={column: raw value}` / `cond_csv` / `sweep` (with
        `sweep_seeds` noises) for vector models, `prompt` / `negative_prompt` for text models; `guidance_scale` /
        `guidance_rescale` default to the model's. `regressor` reads vector conditions back from the images; `lora`
        merges LoRA files for this call (["style.safetensors:0.8", ...] or (path, weight) pairs; kohya / web UI or
        diffusers files)."""
        options = SampleOptions(
            n=n, sampler=sampler_spec(sampler, steps, grid), seed=seed, batch_size=batch_size,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, class_label=class_label, cond=cond,
            cond_csv=None if cond_csv is None else str(cond_csv), sweep=sweep, sweep_seeds=sweep_seeds, prompt=prompt,
            negative_prompt=negative_prompt, regressor=None if regressor is None else str(regressor),
            precision=precision, lora=lora)
        return self.draw(options, callback=callback)

    def edit(self, image: str | Path | Tensor | None = None, *, mode: str = "img2img", strength: float = 0.6,
             mask: str | Path | Tensor | None = None, between: Sequence[int] = (0, 1), n: int = 1,
             sampler: SamplerArg = None, steps: int | None = None, grid: str | None = None, seed: int = 0,
             batch_size: int = 64, guidance_scale: float | None = None, class_label: int | None = None,
             cond: Mapping[str, float] | str | None = None, prompt: str | None = None,
             negative_prompt: str | None = None, precision: str = "32", lora: Sequence[Any] | None = None,
             callback: StepCallback | None = None) -> Samples:
        """Edit with the model: `mode="img2img"` (SDEdit from `image` at `strength`; 1 = from pure noise),
        `"inpaint"` (regenerate where `mask` is white, keep `image` elsewhere) or `"interpolate"` (n frames between
        the noises of images `between` under `seed`; a deterministic sampler). An image is a file (preprocessed as
        the model's training images: ROI crop, resize) or a tensor [C, H, W] in [-1, 1]."""
        options = SampleOptions(
            n=n, sampler=sampler_spec(sampler, steps, grid), seed=seed, batch_size=batch_size,
            guidance_scale=guidance_scale, class_label=class_label, cond=cond, prompt=prompt,
            negative_prompt=negative_prompt, mode=mode, init_image=image, mask=mask, strength=strength,
            interpolate_between=tuple(between), precision=precision, lora=lora)
        return self.draw(options, callback=callback)

    def draw(self, options: SampleOptions, *, callback: StepCallback | None = None, sink: Sink | None = None,
             done: Mapping[int, Tensor] | None = None) -> Samples:
        """Sample a checked request (`sample` and `edit` build one; sample.py builds one from its config): each
        batch goes to `sink` as it is made, and images already `done` are not drawn again."""
        spec = self.module.sampling_spec(options.sampler)
        if self.module.grid_cache is None and "optimized" in (spec.grid, self.module.scheduler.grid) and self.source \
                and Path(self.source).is_file():
            self.module.grid_cache = checkpoint_grid_cache(self.source)  # fitted grids cached beside the checkpoint
        return draw(self.module, options, callback=callback, sink=sink, done=done,
                    record={**self._record, "use_ema": self.use_ema})


    def evaluate(self, metrics: str | MetricsConfig | Mapping[str, Any] = "default", *, data: Any = None,
                 n: int | None = None, seed: int | None = None, batch_size: int | None = None,
                 sampler: SamplerArg = None, steps: int | None = None, grid: str | None = None,
                 guidance_scale: float | None = None, prompts: Sequence[str] | None = None,
                 negative_prompt: str | None = None, precision: str = "32", out_dir: str | Path | None = None,
                 overwrite: bool = False, save_images: bool = True, lora: Sequence[Any] | None = None,
                 networks: Networks | None = None) -> dict[str, Any]:
        """Score the model with the pinned protocol of evaluate.py; returns the metrics.json record.

        `metrics`: a preset of conf/metrics (none, fast, default, full, nll), a `MetricsConfig` or its fields;
        `data`: the reference set, a preset of conf/data or a data module (default: the checkpoint's own);
        `n` / `seed` / `batch_size` default to the preset's; `prompts` for text models (image i gets prompt i mod
        len). With `out_dir`, metrics.json, a grid and (with `save_images`) every image are written there too."""
        mcfg = metrics_config(metrics)
        prompts = list(prompts) if prompts else None
        n = checks.integer(n if n is not None else (len(prompts) if prompts else mcfg.n_samples), "n_samples",
                           0 if mcfg.nll["enabled"] else 1)
        seed = resolve_seed(mcfg.seed if seed is None else seed)
        batch_size = checks.integer(mcfg.batch_size if batch_size is None else batch_size, "batch_size", 1)
        if guidance_scale is not None:
            guidance_scale = checks.real(guidance_scale, "guidance_scale", 0.0)
        precision = checks.inference_precision(precision, self.device)
        out = checks.fresh_output(out_dir, "out_dir", overwrite) if out_dir is not None else None
        datamodule = reference_data(self.module, group_object("data", data) if isinstance(data, str) else data, prompts)
        apply_loras(self.module, lora)  # the record's variant names them (none restores the model's own weights)

        def sink(images: Tensor, index: Tensor) -> None:
            (out / "images").mkdir(exist_ok=True)
            for image, i in zip(images, index.tolist()):
                write_png(image, out / "images" / f"{i:06d}.png")

        with evaluated_as(self.module, sampler_spec(sampler, steps, grid), guidance_scale):
            record, _, _ = evaluate(self.module, mcfg, datamodule, n=n, seed=seed, batch_size=batch_size,
                                    out_dir=out, prompts=prompts, negative_prompt=negative_prompt, precision=precision,
                                    sink=sink if out is not None and save_images else None, networks=networks,
                                    ckpt=self._record.get("ckpt"))
        return record

    def export(self, out: str | Path, *, sampler: SamplerArg = None, card_n: int = 16, card_seed: int = 0,
               overwrite: bool = False, checked: bool = False) -> dict[str, Any]:
        """Write the model as a diffusers pipeline folder (`DDPMPipeline` / `LDMPipeline`, loadable offline and by
        `difflab.load`), with difflab.json, a grid of `card_n` samples and a model card; returns the files."""
        folder = Path(out) if checked else checks.fresh_output(out, "out", overwrite)
        if not checked:
            checks.integer(card_n, "card.n", 0)
            checks.seed(card_seed, "card.seed")
        ckpt = self._record.get("ckpt")
        return export(self.module, folder, sampler=sampler_spec(sampler), card_n=card_n, card_seed=card_seed,
                      use_ema=self.use_ema, ckpt=Path(ckpt) if ckpt else None)


class Regressor:
    """A condition regressor (`python train.py model=regressor`): reads the values an image shows, in raw units."""

    def __init__(self, module: RegressorModule, source: str | None = None) -> None:
        self.module, self.source = module.eval(), source

    def __repr__(self) -> str:
        return f"Regressor({self.source!r}, columns={self.columns})"

    @property
    def columns(self) -> list[str]:
        """The names of the values it reads."""
        return list(self.module.columns)

    def to(self, device: str | torch.device) -> Regressor:
        """Move the regressor to `device` (checked to exist here)."""
        self.module.to(checks.inference_device(device))
        return self

    def predict(self, images: Tensor | Sequence[str | Path], *, batch_size: int = 64, preprocess: str = "auto",
                datamodule: Any = None) -> Tensor:
        """Values [N, D] in raw units of images: a tensor [N, C, H, W] in [-1, 1] as it is, or image files
        (preprocessed as its training images, by the data module of its run or `datamodule`, unless they already
        have the model's size: `preprocess=auto`; `true` always, `false` never)."""
        if isinstance(images, Tensor):
            return self.module.predict(images.to(self.module.device), batch_size)
        if preprocess not in PREPROCESS:
            raise ConfigError.bad_value("preprocess", f"{preprocess!r} is not one of {', '.join(PREPROCESS)}",
                                        "Use auto (files of the model's size as they are), true or false.")
        files = [Path(p) for p in images]
        data = datamodule if datamodule is not None else run_data(self.module, required=True)
        return torch.cat([self.module.predict(read_images(files[i : i + batch_size], data, self.module, preprocess)
                                              .to(self.module.device)) for i in range(0, len(files), batch_size)])


def load(path: str | Path, *, use_ema: bool = True, device: str = "auto", sampler: SamplerArg = None,
         scheduler: Mapping[str, Any] | None = None, dtype: str = "float32", resolution: int | None = None,
         prompt_weighting: bool = True, key: str = "ckpt", expect: type | None = None) -> DiffusionModel | Regressor:
    """The model at `path`: a difflab checkpoint (a diffusion model or a regressor), a diffusers pipeline folder of a
    UNet2DModel (e.g. written by export.py) or a Stable Diffusion folder (model_index.json decides).

    `use_ema`: the EMA weights when the checkpoint has them; `device`: auto | cpu | cuda | cuda:N | mps; `sampler`
    replaces the model's own; `scheduler` overrides values of its scheduler (e.g. {"grid": "karras"}); `dtype`,
    `resolution` and `prompt_weighting` apply to pipeline folders. Errors name `key` (the command's config key);
    `expect` (DiffusionModel or Regressor) refuses a checkpoint of the other kind with a message saying how to get
    the right one."""
    target = checks.inference_device(device)
    spec = sampler_spec(sampler)
    overrides = {k: v for k, v in (scheduler or {}).items() if v is not None}
    file = Path(str(path)).expanduser()
    if file.is_dir():
        module, record = _load_folder(file, spec, overrides, dtype, resolution, prompt_weighting, key)
        return DiffusionModel(module.to(target), str(file), use_ema=False, record=record)
    ckpt = read_checkpoint(file, key=key)
    if expect is Regressor or (expect is None and issubclass(stored_model_class(ckpt, file, key), RegressorModule)):
        return Regressor(load_regressor(file, key=key, device=target, use_ema=use_ema, ckpt=ckpt), str(file))
    module = load_module(file, sampler=spec, scheduler_overrides=overrides or None, use_ema=use_ema, key=key,
                         ckpt=ckpt)  # refuses a model that generates no images
    return DiffusionModel(module.to(target), str(file), use_ema=use_ema, record={"ckpt": str(file.resolve())})


def from_config(model: Any, *, sampler: SamplerArg = None, scheduler: Mapping[str, Any] | None = None,
                device: str = "auto", record: Mapping[str, Any] | None = None) -> DiffusionModel:
    """The model a `model=<preset>` config builds (model=sd / model=diffusers with `pipeline.path=`): the config the
    user composed, not one read from a checkpoint."""
    target = checks.inference_device(device)
    overrides = {k: v for k, v in (scheduler or {}).items() if v is not None}
    spec = sampler_spec(sampler)
    module = instantiate(model, scheduler_overrides=overrides)
    module.sampler = spec if spec is not None else module.sampler
    return DiffusionModel(module.to(target), None, use_ema=False, record={"ckpt": None, **(record or {})})


def _load_folder(folder: Path, spec: SamplerSpec | None, overrides: dict[str, Any], dtype: str,
                 resolution: int | None, weighting: bool, key: str) -> tuple[Any, dict[str, Any]]:
    """A pipeline folder as a module: Stable Diffusion (a UNet2DConditionModel) or a UNet2DModel pipeline."""
    unet = folder / "unet" / "config.json"
    kind = json.loads(unet.read_text()).get("_class_name") if unet.is_file() else None
    if kind == "UNet2DConditionModel":
        module = load_stable_diffusion(str(folder), sampler=spec, resolution=resolution,
                                       scheduler_overrides=overrides or None, dtype=dtype, weighting=weighting)
    elif kind is not None or (folder / "model_index.json").is_file():
        module = load_diffusers_pipeline(str(folder), sampler=spec, scheduler_overrides=overrides or None, dtype=dtype)
    else:
        raise CheckpointNotFoundError(
            f"Config key `{key}` names the folder '{folder}', which is neither a checkpoint file nor a diffusers / "
            f"Stable Diffusion pipeline folder (no model_index.json or unet/config.json). {folder_hint(folder, key)}")
    return module, {"ckpt": None, "pipeline": str(folder)}


def check_source(cfg: DictConfig) -> None:
    """A composed sample.py / evaluate.py config names a model: `ckpt=` or `model=<preset>` (checked first)."""
    if not cfg.get("ckpt") and cfg.get("model") is None:
        raise ConfigError("Config key `ckpt` is required: pass ckpt=<a checkpoint, e.g. runs/train/<run>/checkpoints/"
                          "last.ckpt>, or model=sd pipeline.path=<Stable Diffusion folder>.")


def load_configured(cfg: DictConfig, sampler: SamplerSpec | None = None) -> DiffusionModel:
    """The model of a composed sample.py / evaluate.py config: `ckpt=<checkpoint>` (rebuilt from its saved config) or
    `model=sd|diffusers pipeline.path=<folder>` (a pretrained pipeline), on `device`, with `sampler` (default: the
    config's `sampler` node, else the model's own) and the `scheduler` overrides."""
    check_source(cfg)
    overrides = OmegaConf.to_container(cfg.scheduler) if cfg.get("scheduler") else {}
    sampler = sampler if sampler is not None else checks.sampler_spec(cfg.get("sampler"))
    if cfg.get("ckpt"):
        model = load(cfg.ckpt, use_ema=bool(cfg.use_ema), device=str(cfg.device), scheduler=overrides,
                     expect=DiffusionModel, sampler=sampler)
    else:
        record = {"pipeline": str(cfg.pipeline.path)} if cfg.get("pipeline") else {}
        model = from_config(cfg.model, sampler=sampler, scheduler=overrides, device=str(cfg.device), record=record)
    changes = checks.own_sampler_changes(cfg.get("sampler"))  # sampler.steps=20 without sampler=: the model's own
    if changes:
        model.module.sampler = sampler_spec(model.sampler, **changes)
    return model
