"""`sample.py from_png=<image>`: the request a PNG records, as sample.py's overrides again.

A PNG written by difflab carries its request (`Request`: sample.py's keys, `SampleOptions.request`); composing
those keys again gives the same `SampleOptions`, so the image comes out bit for bit the same on the same machine.
A PNG of the Stable Diffusion web UI (or of evaluate.py, or a training grid) gives what its keys say: prompt,
negative prompt, Steps, Sampler, Schedule type, CFG scale and Seed (one image), plus difflab's checkpoint and
condition keys when present. Keys given on the command line win over the PNG's (`with_png_request`); what a PNG
says that sample.py cannot use (Size, Model hash, ...) is named in a warning (`PngRequest.unused`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import UnidentifiedImageError

from difflab.api.overrides import request_overrides
from difflab.errors import ConfigError, MissingFileError
from difflab.evaluation.image_record import INDEX, REQUEST, SAMPLER
from difflab.samplers.aliases import resolve, resolve_grid
from difflab.utils.pnginfo import Parameters, read_text

KEY = "from_png"
USED = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Class label", "Condition", "Guidance rescale",
        "Checkpoint", "Mode", "Denoising strength", "Init image", "Mask", INDEX, SAMPLER, REQUEST}
VECTOR_KEYS = ("cond", "cond_csv", "sweep", "sweep_seeds")  # one way to give a vector model's conditions


@dataclass
class PngRequest:
    """What a PNG asks for: sample.py's keys (`request`), which image of it the PNG is (`index`, None when it does
    not say), whether it is difflab's own full request (`exact`), and the keys sample.py does not use."""

    request: dict[str, Any]
    index: int | None
    exact: bool
    unused: list[str] = field(default_factory=list)


def read_parameters(path: Any, key: str = KEY) -> Parameters:
    """The `parameters` chunk of an image file; clear errors name `key` for a missing file, a file that is no
    image and an image without the chunk."""
    file = Path(str(path or "")).expanduser()
    if not str(path or "").strip() or not file.is_file():
        raise MissingFileError.for_path(file, key, f"Pass {key}=<a PNG written by sample.py, evaluate.py, the studio "
                                        "or the Stable Diffusion web UI>.", "Image")
    try:
        text = read_text(file)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ConfigError.bad_value(key, f"'{file}' is not an image file ({err})",
                                    f"Pass {key}=<a PNG written by sample.py, the studio or the web UI>.") from None
    if not text:
        raise ConfigError.bad_value(key, f"'{file}' carries no `parameters` text chunk (the settings of the image)",
                                    "Pass the PNG sample.py, evaluate.py, the studio or the web UI wrote; copies "
                                    "converted to JPEG/WebP, screenshots and re-saved images lose the chunk.")
    return Parameters.parse(text)


def png_request(path: Any, key: str = KEY) -> PngRequest:
    """The request of the PNG at `path` (`PngRequest`)."""
    params = read_parameters(path, key)
    fields = params.fields
    index = _integer(fields.get(INDEX), INDEX, key)
    if REQUEST in fields:
        return PngRequest(_json(params, REQUEST, key), index, True)
    request: dict[str, Any] = {"ckpt": fields.get("Checkpoint"), "n": 1,
                               "seed": _integer(fields.get("Seed"), "Seed", key),
                               "prompt": params.prompt or None, "negative_prompt": params.negative_prompt or None,
                               "guidance_scale": _real(fields.get("CFG scale"), "CFG scale", key),
                               "guidance_rescale": _real(fields.get("Guidance rescale"), "Guidance rescale", key),
                               "class_label": _integer(fields.get("Class label"), "Class label", key),
                               "cond": _json(params, "Condition", key) if "Condition" in fields else None,
                               "sampler": _sampler(params, key)}
    if fields.get("Mode") in ("img2img", "inpaint"):
        request.update(mode=fields["Mode"], init_image=fields.get("Init image"), mask=fields.get("Mask"),
                       strength=_real(fields.get("Denoising strength"), "Denoising strength", key))
    unused = [k for k in fields if k not in USED]
    return PngRequest({k: v for k, v in request.items() if v is not None}, index, False, unused)


def _sampler(params: Parameters, key: str) -> dict[str, Any] | None:
    """The sampler of a PNG: difflab's exact settings, else the web UI's Sampler, Schedule type and Steps."""
    if SAMPLER in params.fields:
        return _json(params, SAMPLER, key)
    name = params.fields.get("Sampler")
    if not name:
        return None
    try:
        sampler, grid = resolve(name)
    except ConfigError:
        raise ConfigError.bad_value(key, f"its Sampler {name!r} is no sampler difflab has", "Pass sampler=<name> "
                                    "too (it replaces the PNG's), e.g. sampler=\"DPM++ 2M Karras\".") from None
    schedule = params.fields.get("Schedule type")
    if schedule and schedule != "Automatic":
        grid = resolve_grid(schedule)
    return {"name": sampler, "steps": _integer(params.fields.get("Steps"), "Steps", key),
            **({"grid": grid} if grid else {})}


def _json(params: Parameters, name: str, key: str) -> Any:
    try:
        return params.json(name)
    except ValueError:
        raise ConfigError.bad_value(key, f"its `{name}` value is not JSON: {params.fields.get(name)!r}",
                                    "Pass the PNG as difflab wrote it (an edited chunk cannot be read).") from None


def _integer(text: Any, name: str, key: str) -> int | None:
    return _number(text, name, key, int)


def _real(text: Any, name: str, key: str) -> float | None:
    return _number(text, name, key, float)


def _number(text: Any, name: str, key: str, kind: type) -> Any:
    """A pair's value as `kind` (None when absent); a ConfigError naming `key` and the pair otherwise."""
    if text is None or text == "":
        return None
    try:
        return kind(str(text))
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError.bad_value(key, f"its `{name}` is {text!r}, not {what}", "Pass another PNG, or give the "
                                    "value on the command line.") from None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _replaced(name: str, given: set[str]) -> bool:
    """Whether the command line's keys `given` replace the PNG's override of `name`: the same key; any sampler key
    of the PNG once `sampler=` is given; a vector condition once another way to give one is; the checkpoint once
    model= is."""
    return (name in given or (name.startswith("sampler.") and "sampler" in given)
            or (name in VECTOR_KEYS and bool(given & set(VECTOR_KEYS))) or (name == "ckpt" and "model" in given))


def with_png_request(overrides: list[str]) -> list[str]:
    """sample.py's overrides with `from_png=<file>` expanded: the PNG's request first, then the given overrides
    (which replace the PNG's values of the same keys). Unchanged without from_png."""
    found = [o for o in overrides if _key(o) == KEY]
    if not found:
        return overrides
    if any(o.startswith("+") for o in found) or len(found) > 1:
        raise ConfigError.bad_value(KEY, "given more than once", "Pass one from_png=<file>.")
    path = found[0].split("=", 1)[1].strip().strip("'\"")
    given = {_key(o) for o in overrides}
    theirs = [o for o in request_overrides(png_request(path).request) if not _replaced(_key(o), given)]
    return theirs + list(overrides)

