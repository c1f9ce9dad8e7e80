"""The studio's one cache of loaded models: the model stays loaded between requests, at most `size` of them.

A model is loaded by `difflab.api.models.load_configured` (what `python sample.py` calls) without the request's
sampler; each request brings its own sampler (`DiffusionModel.draw`), so switching samplers, steps or grids reloads
nothing. A new checkpoint file (other path, size or mtime), another
`use_ema`, scheduler override or pipeline is another entry; the least recently used entry leaves first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from omegaconf import DictConfig, open_dict

from difflab.api import checks
from difflab.api.models import DiffusionModel, load_configured, model_key


class ModelCache:
    """At most `size` loaded models, least recently used out first; `load(cfg)` is sample.py's `load_configured`."""

    def __init__(self, size: int = 1) -> None:
        self.size = checks.integer(size, "max_models", 1)
        self._entries: OrderedDict[str, DiffusionModel] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was read from disk (the cache's misses)

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, cfg: DictConfig) -> DiffusionModel:
        """The model of a sample.py config, loaded once (with its own sampler) and kept."""
        key = model_key(cfg)
        with self._lock:
            model = self._entries.pop(key, None)
            if model is None:
                while len(self._entries) >= self.size:
                    self._entries.popitem(last=False)  # drop the oldest before loading the next
                base = cfg.copy()
                with open_dict(base):
                    base.sampler = None  # the checkpoint's own sampler is kept as the default
                model = load_configured(base)
                self.loads += 1
            self._entries[key] = model
            return model

    def peek(self, cfg: DictConfig) -> DiffusionModel | None:
        """The loaded model of a config (None when it is not loaded)."""
        return self._entries.get(model_key(cfg))
