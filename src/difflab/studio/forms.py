"""A Sample-tab request as the `python sample.py` command that reproduces it.

The studio never samples by a path of its own: a request becomes the command-line overrides a user would type
(`SampleForm.overrides`), those are composed into sample.py's config exactly as the script composes them
(`compose_sample`: `difflab.compose`, web UI sampler names included), and the Python API draws the images as
sample.py does (`SampleOptions.from_config`, `DiffusionModel.draw`). `command` is the shell line shown next to the
result.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from difflab.api.config import compose, group_option
from difflab.api.overrides import number, quoted, value
from difflab.api.pnginfo import PngRequest
from difflab.api.sampling import resolve_seed


@dataclass
class SampleForm:
    """What the Sample tab asks for; None leaves a value to the checkpoint (or sample.yaml)."""

    model: str                            # a checkpoint file, or a Stable Diffusion folder
    seed: int                             # the resolved seed (never -1 here: the command must reproduce the images)
    n: int = 4
    sampler: str | None = None            # a registered sampler or a web UI name ("DPM++ 2M Karras")
    steps: int | None = None
    grid: str | None = None               # sampler.grid: karras, logsnr, trailing, ...
    guidance_scale: float | None = None
    class_label: int | None = None
    cond: Mapping[str, float] | None = None   # raw units, one value per column
    prompt: str | None = None
    negative_prompt: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)  # other condition inputs, by sample.py key
    init_image: str | None = None         # img2img: an image file (preprocessed by the run's data module)
    strength: float = 0.6
    extra: list[str] = field(default_factory=list)  # the studio's own settings (device=..., use_ema=false, ...)

    @property
    def stable_diffusion(self) -> bool:
        """Whether `model` is a Stable Diffusion folder (model=sd) rather than a difflab checkpoint."""
        return Path(self.model).is_dir()

    def overrides(self) -> list[str]:
        """The command-line overrides of this request, as a user would type them after `python sample.py`."""
        out = [f"model=sd", f"pipeline.path={self.model}"] if self.stable_diffusion else [f"ckpt={self.model}"]
        if self.sampler:
            out.append(f"sampler={self.sampler}")
        if self.steps is not None:
            out.append(f"sampler.steps={int(self.steps)}")
        if self.grid:
            out.append(f"sampler.grid={self.grid}")
        out += [f"n={int(self.n)}", f"seed={int(self.seed)}"]
        if self.guidance_scale is not None:
            out.append(f"guidance_scale={number(self.guidance_scale)}")
        given = {"class_label": self.class_label, "cond": self.cond, "prompt": self.prompt,
                 "negative_prompt": self.negative_prompt or None, **self.inputs}
        out += [f"{key}={value(item)}" for key, item in given.items() if item is not None]
        if self.init_image:
            out += ["mode=img2img", f"init_image={quoted(self.init_image)}", f"strength={number(self.strength)}"]
        return out + list(self.extra)

    def command(self) -> str:
        """The shell line that reproduces this request's images: `python sample.py <overrides>`."""
        return " ".join(["python", "sample.py", *(shlex.quote(o) for o in self.overrides())])


def compose_sample(overrides: list[str], out_dir: str | Path) -> DictConfig:
    """sample.py's config for these overrides, composed as `python sample.py <overrides>` composes it, writing
    into `out_dir`."""
    return compose(list(overrides), "sample", run_dir=out_dir)


def parse_seed(value: Any) -> int:
    """The seed of a request: -1 (or empty) draws a random one, as sample.py's `seed=-1` does."""
    return resolve_seed(-1 if value in (None, "") else value)


SAMPLER_FIELDS = ("name", "steps", "grid")  # what the Sample tab has fields for; other sampler settings are named
CONDITION_KEYS = ("class_label", "cond", "prompt", "negative_prompt")


@dataclass
class PngFields:
    """What a dropped PNG fills into the Sample tab: the model (None: keep the one picked), sampler, grid, steps,
    images, seed, guidance, the condition inputs by sample.py key, the img2img input; and what it says that the
    tab has no field for (`left_out`: shown in the status line, never dropped silently)."""

    model: str | None
    sampler: str | None
    grid: str | None
    steps: int | None
    n: int
    seed: int | None
    guidance_scale: float | None
    inputs: dict[str, Any]
    init_image: str | None = None
    strength: float | None = None
    left_out: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, found: PngRequest, model: str | None) -> PngFields:
        """The fields of a PNG's request; `model` is its checkpoint when the studio serves it (else None)."""
        request = dict(found.request)
        sampler = dict(request.get("sampler") or {})
        preset = dict(group_option("sampler", sampler["name"])) if sampler.get("name") else {}
        left = [f"sampler.{k}={v}" for k, v in sampler.items()  # knobs off the sampler's preset (a field-less value)
                if k not in SAMPLER_FIELDS and k != "clip_denoised" and preset.get(k) != v]
        left += [f"{k}={request[k]}" for k in ("cond_csv", "sweep", "guidance_rescale", "mask", "paste_back")
                 if request.get(k) is not None]
        if int(request.get("batch_size") or 1 << 30) < int(request.get("n") or 1):  # several batches: another rounding
            left.append(f"batch_size={request['batch_size']}")
        if request.get("ckpt") and model is None:
            left.append(f"ckpt={request['ckpt']} (not in the folders this studio serves)")
        edit = request.get("mode") == "img2img"
        return cls(model=model, sampler=sampler.get("name"), grid=sampler.get("grid"), steps=sampler.get("steps"),
                   n=int(request.get("n") or 1), seed=request.get("seed"), guidance_scale=request.get("guidance_scale"),
                   inputs={k: request[k] for k in CONDITION_KEYS if request.get(k) is not None},
                   init_image=request.get("init_image") if edit else None,
                   strength=request.get("strength") if edit else None, left_out=left + list(found.unused))
