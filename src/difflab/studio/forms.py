"""A Sample-tab request as the `python sample.py` command that reproduces it.

The studio never samples by a path of its own: a request becomes the command-line overrides a user would type
(`SampleForm.overrides`), those are composed into sample.py's config exactly as the script composes them
(`compose_sample`: `difflab.compose`, web UI sampler names included), and the Python API draws the images as
sample.py does (`SampleOptions.from_config`, `DiffusionModel.draw`). `command` is the shell line shown next to the
result.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from difflab.api.config import compose
from difflab.api.sampling import resolve_seed


def quoted(text: str) -> str:
    """`text` as a double-quoted Hydra override value (quotes escaped; backslashes before a quote or at the end
    doubled), so prompts with `(word:1.4)`, commas, brackets or '=' pass through unchanged."""
    body = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', str(text))
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return f'"{body}"'


def _number(value: float) -> str:
    """A float as Hydra reads it back exactly (repr keeps every digit)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _value(value: Any) -> str:
    """A condition input as a Hydra override value: integers as they are, numbers exactly, a mapping of columns to
    numbers as `{column: value, ...}`, text quoted."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Mapping)):
        return quoted(str(value))
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _number(value)
    return "{" + ", ".join(f"{_key(k)}: {_number(v)}" for k, v in value.items()) + "}"


def _key(name: str) -> str:
    """A vector column as a Hydra dict key (plain names as they are, others quoted)."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) else quoted(name)


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
            out.append(f"guidance_scale={_number(self.guidance_scale)}")
        given = {"class_label": self.class_label, "cond": self.cond, "prompt": self.prompt,
                 "negative_prompt": self.negative_prompt or None, **self.inputs}
        out += [f"{key}={_value(value)}" for key, value in given.items() if value is not None]
        if self.init_image:
            out += ["mode=img2img", f"init_image={quoted(self.init_image)}", f"strength={_number(self.strength)}"]
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
