"""Values as Hydra command-line overrides, exactly: what the studio's commands and `from_png=` write.

`value` spells any plain value (numbers with every digit, text quoted so that prompts with `(word:1.4)`, commas,
brackets or '=' pass through unchanged, lists and `{column: value}` mappings); `request_overrides` spells a whole
sample.py request (the `Request` a PNG carries, `difflab.evaluation.image_record`) as the overrides that compose it
again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# sample.py's keys of a request, in the order a command line lists them (the model and sampler come first)
REQUEST_KEYS = ("n", "seed", "batch_size", "precision", "guidance_scale", "guidance_rescale", "class_label", "cond",
                "cond_csv", "sweep", "sweep_seeds", "prompt", "negative_prompt", "mode", "init_image", "mask",
                "strength", "interpolate_between", "lora", "paste_back", "paste_back_blend")


def quoted(text: str) -> str:
    """`text` as a double-quoted Hydra override value (quotes escaped; backslashes before a quote or at the end
    doubled)."""
    body = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', str(text))
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return f'"{body}"'


def number(value: float) -> str:
    """A float as Hydra reads it back exactly (repr keeps every digit)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def key(name: str) -> str:
    """A mapping key as Hydra takes it (plain names, dotted ones too, as they are; others quoted)."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-.]*", str(name)) else quoted(name)


def value(item: Any) -> str:
    """Any plain value as a Hydra override value: null, true/false, integers, floats exactly (and as floats: 1.0),
    text quoted, lists and mappings (recursively)."""
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        return repr(item)
    if isinstance(item, Mapping):
        return "{" + ", ".join(f"{key(k)}: {value(v)}" for k, v in item.items()) + "}"
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(value(v) for v in item) + "]"
    return quoted(str(item))


def request_overrides(request: Mapping[str, Any]) -> list[str]:
    """The sample.py overrides of a recorded request: the model (`ckpt`, `use_ema`, `scheduler.*`), the sampler
    (`sampler=<name>` and every field with `++sampler.<field>=`), then each request key that was given."""
    out = [f"ckpt={quoted(request['ckpt'])}"] if request.get("ckpt") else []
    if request.get("use_ema") is False:
        out.append("use_ema=false")
    out += [f"scheduler.{k}={value(v)}" for k, v in (request.get("scheduler") or {}).items() if v is not None]
    sampler = dict(request.get("sampler") or {})
    if sampler.get("name"):
        out.append(f"sampler={sampler.pop('name')}")
        out += [f"++sampler.{k}={value(v)}" for k, v in sampler.items()]
    return out + [f"{k}={value(request[k])}" for k in REQUEST_KEYS if request.get(k) is not None]
