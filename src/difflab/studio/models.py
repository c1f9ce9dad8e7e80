"""The studio's one cache of loaded models: the model stays loaded between requests, at most `size` of them.

A model is loaded by `difflab.cli.sample.load_model` (what `python sample.py` calls) without the request's
sampler; each request then sets its sampler on the cached module, as `load_module` does for a given sampler,
so switching samplers, steps or grids reloads nothing. A new checkpoint file (other path, size or mtime), another
`use_ema`, scheduler override or pipeline is another entry; the least recently used entry leaves first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from difflab.api import checks
from difflab.api.sampling import load_model


def model_key(cfg: DictConfig) -> str:
    """What of a sample.py config decides the loaded model (everything `load_model` reads but the sampler)."""
    ckpt = cfg.get("ckpt")
    stat = Path(ckpt).expanduser().stat() if ckpt and Path(ckpt).expanduser().is_file() else None
    fields = {
        "ckpt": str(Path(ckpt).expanduser().resolve()) if ckpt else None,
        "file": (stat.st_size, stat.st_mtime_ns) if stat else None,
        "use_ema": bool(cfg.get("use_ema", True)),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        "model": OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") is not None else None,
        "device": str(cfg.get("device")),
    }
    return json.dumps(fields, sort_keys=True, default=str)


class ModelCache:
    """At most `size` loaded models, least recently used out first; `load(cfg)` is sample.py's `load_model`."""

    def __init__(self, size: int = 1) -> None:
        self.size = checks.integer(size, "max_models", 1)
        self._entries: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # key -> (module, its own sampler)
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was read from disk (the cache's misses)

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, cfg: DictConfig) -> Any:
        """The model of a sample.py config, loaded once and kept; its sampler is the request's (or its own)."""
        spec = checks.sampler_spec(cfg.get("sampler"))  # before any loading, as sample.py checks it
        key = model_key(cfg)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                while len(self._entries) >= self.size:
                    self._entries.popitem(last=False)  # drop the oldest before loading the next
                base = cfg.copy()
                with open_dict(base):
                    base.sampler = None  # the checkpoint's own sampler is kept as the default
                module = load_model(base)
                entry = (module, module.sampler)
                self.loads += 1
            self._entries[key] = entry
            module, own = entry
            module.sampler = spec if spec is not None else own
            return module

    def peek(self, cfg: DictConfig) -> Any:
        """The loaded model of a config without changing its sampler (None when it is not loaded)."""
        entry = self._entries.get(model_key(cfg))
        return None if entry is None else entry[0]
