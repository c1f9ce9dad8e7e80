"""The settings of an image inside its PNG: a `parameters` text chunk in the Stable Diffusion web UI's layout.

The web UI (AUTOMATIC1111 / Forge, `modules/infotext_utils.py`) writes one text chunk named `parameters`:

    a photo of a cat
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: ...

the prompt (any number of lines), then `Negative prompt:` (when there is one), then one line of `Key: value` pairs
joined by ", " where a value holding a comma, colon or newline is written as a JSON string. `Parameters` writes and
reads that layout exactly as the web UI does (its `quote` / `unquote` and its pair pattern), so its PNG Info tab
reads difflab's images and difflab reads the web UI's. difflab's own keys (the checkpoint, a condition vector, the
full request) are more pairs of the same line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

CHUNK = "parameters"  # the text chunk's name (the web UI's)
NEGATIVE = "Negative prompt:"
# the web UI's pattern of one `Key: value` pair (infotext_utils.re_param_code)
PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value: Any) -> str:
    """A value as the web UI writes it: as it is, or a JSON string when it holds ',', ':' or a newline."""
    text = value_text(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def unquote(text: str) -> str:
    """The web UI's reading of a value: a JSON string unquoted, anything else as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def value_text(value: Any) -> str:
    """A value as text: booleans lower case, whole floats without '.0' (CFG scale: 7), other numbers exactly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=False)
    return str(value)


@dataclass
class Parameters:
    """An image's settings: the prompt, the negative prompt and the `Key: value` pairs, in the web UI's layout."""

    prompt: str = ""
    negative_prompt: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # written in this order; None values are left out

    def text(self) -> str:
        """The chunk's text, as the web UI's `create_infotext` writes it."""
        pairs = ", ".join(f"{key}: {quote(value)}" for key, value in self.fields.items() if value is not None)
        negative = f"\n{NEGATIVE} {self.negative_prompt}" if self.negative_prompt else ""
        return f"{self.prompt}{negative}\n{pairs}".strip()

    @classmethod
    def parse(cls, text: str) -> Parameters:
        """The web UI's `parse_generation_parameters`: the last line is the pairs when it holds three or more;
        lines before `Negative prompt:` are the prompt, the rest the negative prompt. Values stay text."""
        *lines, last = str(text).strip().split("\n")
        if len(PAIR.findall(last)) < 3:
            lines, last = [*lines, last], ""
        prompt: list[str] = []
        negative: list[str] = []
        for line in lines:
            line = line.strip()
            if line.startswith(NEGATIVE):
                negative.append(line[len(NEGATIVE):].strip())
            elif negative:
                negative.append(line)
            else:
                prompt.append(line)
        fields = {key: unquote(value) for key, value in PAIR.findall(last)}
        return cls("\n".join(prompt), "\n".join(negative), fields)

    def json(self, key: str) -> Any:
        """A pair whose value is JSON (difflab's `Condition`, `Request`, ...), decoded; None when absent."""
        value = self.fields.get(key)
        return None if value is None else json.loads(value) if isinstance(value, str) else value


def png_text(info: Parameters | str | None) -> dict[str, str]:
    """The text chunks of a PNG written with `info` ({} for None)."""
    if info is None:
        return {}
    return {CHUNK: info.text() if isinstance(info, Parameters) else str(info)}


def read_text(path: str | Path) -> str | None:
    """The `parameters` chunk of an image file (None when it has none); PIL's errors pass through."""
    with Image.open(path) as img:
        img.load()  # text chunks after the image data are read with it
        return (getattr(img, "text", None) or {}).get(CHUNK) or img.info.get(CHUNK)


_HASHES: dict[tuple[str, int, int], str] = {}


def model_hash(path: str | Path | None) -> str | None:
    """The web UI's "Model hash" of a checkpoint file: the first 10 hex digits of its SHA-256 (cached per file
    version); None for no file (a pipeline folder, a model still in training)."""
    if path is None or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()[:10]
    return _HASHES[key]
