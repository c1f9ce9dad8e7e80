"""JSON records (samples.json, metrics.json): plain JSON only, written atomically.

A record never holds `Infinity` or `NaN` (not JSON, and unreadable to most tools): a non-finite float is written
as null, the value that means "not computed" in every record.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float (nested in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_json(path: str | Path, record: Any) -> Path:
    """Write `record` as indented JSON to `path` (strict: non-finite floats as null) through a temp file beside it."""
    path = Path(path)
    text = json.dumps(finite_json(record), indent=2, allow_nan=False, default=str)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
