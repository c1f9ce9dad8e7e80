"""What a PNG says about how it was made: the one per-image record of every writer (sample.py, the studio, the
API's `Samples`, evaluate.py and the training grids).

`image_parameters` turns a module, the sampler it ran, the seed, the image's index and its condition into the web
UI's `parameters` layout (`difflab.utils.pnginfo.Parameters`): the web UI's keys first (Steps, Sampler, Schedule
type, CFG scale, Seed, Size, Model hash, Model, Version; Lora hashes of the LoRA files merged), then difflab's own
(Image index, Class label, Condition, Sampler settings, Checkpoint, ...), and, for images of a sample.py request,
the request itself (`Request`, sample.py's keys as JSON) that `sample.py from_png=<file>` rebuilds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from difflab.samplers import SamplerSpec
from difflab.samplers.aliases import webui_labels
from difflab.utils.pnginfo import Parameters, model_hash

REQUEST = "Request"           # sample.py's keys of the request that made the image (JSON)
INDEX = "Image index"         # image i of the request: its noise depends on (Seed, i) alone
SAMPLER = "Sampler settings"  # the SamplerSpec's fields (JSON): every knob, exactly


@cache
def version() -> str:
    """difflab's version, as the web UI's `Version` key names its own."""
    try:
        return f"difflab {metadata.version('difflab')}"
    except metadata.PackageNotFoundError:  # a source checkout without an install
        return "difflab"


def compact(value: Any) -> str:
    """JSON without spaces (a value of the pairs line)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def sampler_fields(module: Any, sampler: SamplerSpec | None) -> dict[str, Any]:
    """Steps, Sampler and Schedule type as the web UI names them, and difflab's exact sampler settings."""
    spec = module.sampling_spec(sampler) if hasattr(module, "sampling_spec") else sampler
    if spec is None:
        return {}
    scheduler = getattr(module, "scheduler", None)
    grid = spec.grid if spec.grid is not None else getattr(scheduler, "grid", None)
    try:
        steps = spec.steps_for(scheduler) if scheduler is not None else spec.steps
    except ValueError:  # no step count and no training grid
        steps = None
    name, schedule = webui_labels(spec.name, grid)
    return {"Steps": steps, "Sampler": name, "Schedule type": schedule, SAMPLER: compact(spec.record())}


def condition_fields(row: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(the prompt, the pairs) of an image's requested condition: a text model's prompt is the first line, a class
    label its own key, a vector its raw values as JSON."""
    row = dict(row or {})
    prompt = str(row.pop("prompt", "") or "")
    label = row.pop("class_label", None)
    shown = {k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in row.items()}  # float32's digits
    return prompt, {"Class label": label, "Condition": compact(shown) if row else None}


def lora_hashes(module: Any) -> str | None:
    """The web UI's "Lora hashes" of the LoRA files merged into `module` (`name: hash, ...`), None without any."""
    patch = getattr(module, "lora_patch", None)
    applied = [a for a in (patch.applied if patch is not None else []) if model_hash(a["path"])]
    return ", ".join(f"{a['name']}: {model_hash(a['path'])}" for a in applied) or None


def image_parameters(module: Any, *, seed: int, index: int | None = None, sampler: SamplerSpec | None = None,
                     guidance_scale: float | None = None, guidance_rescale: float | None = None,
                     row: Mapping[str, Any] | None = None, negative_prompt: str | None = None,
                     extra: Mapping[str, Any] | None = None, request: Mapping[str, Any] | None = None) -> Parameters:
    """The `parameters` of image `index` of the run seeded `seed` that `module` made with `sampler` (None: its
    own) and guidance (None: its defaults): what every difflab PNG carries. `row` is the image's requested
    condition (`Condition.rows`), `extra` more pairs (mode, strength, run step, ...), `request` the sample.py keys
    that reproduce it."""
    condition = getattr(module, "condition", None)
    guided = bool(getattr(condition, "guided", False))
    ckpt = getattr(module, "checkpoint_path", None)
    shape = tuple(getattr(module, "image_shape", ()) or ())
    prompt, conditions = condition_fields(row)
    fields: dict[str, Any] = {
        **sampler_fields(module, sampler),
        "CFG scale": (float(getattr(module, "guidance_scale", 1.0)) if guidance_scale is None else float(guidance_scale))
        if guided else None,
        "Seed": int(seed),
        "Size": f"{shape[-1]}x{shape[-2]}" if len(shape) >= 2 else None,
        "Model hash": model_hash(ckpt),
        "Model": Path(str(ckpt)).stem if ckpt else None,
        "Version": version(),
        INDEX: index,
        **conditions,
        "Lora hashes": lora_hashes(module),
        "Guidance rescale": guidance_rescale if guided and guidance_rescale else None,
        "Checkpoint": str(Path(str(ckpt)).resolve()) if ckpt else None,
        **dict(extra or {}),
    }
    fields[SAMPLER] = fields.pop(SAMPLER, None)  # after the web UI's keys and the condition
    fields[REQUEST] = compact({k: v for k, v in request.items() if v is not None}) if request else None
    return Parameters(prompt, negative_prompt or "", fields)
