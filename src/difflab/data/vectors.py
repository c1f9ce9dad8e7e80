"""Continuous-vector conditions: z-score statistics of the training split, and in-memory datasets that carry them.

A data module with vector conditions yields ``batch["cond"]``, float32 [B, D]: the raw values ``v`` z-scored
with the training split's statistics, ``(v - mean) / std`` (or raw when ``data.normalize=false``), and exposes
``cond_stats`` (a `CondStats`). The statistics travel with the run (``cond_stats.json`` in the run folder and
``"cond_stats"`` in every checkpoint) so that sampling normalises requested raw values the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from difflab.data.base import Batch, InMemoryImageDataset
from difflab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class CondStats:
    """Per-column mean and std of the training split; `normalize` says whether the network sees z-scores."""

    columns: list[str]
    mean: list[float]
    std: list[float]
    normalize: bool = True

    @classmethod
    def from_values(cls, values: Tensor, columns: Sequence[str], normalize: bool = True,
                    source: str = "the training split") -> CondStats:
        """Statistics of `values` [N, D]; a zero-variance column is an error (with `normalize`) or a warning."""
        if values.ndim != 2 or values.shape[1] != len(columns) or values.shape[0] < 2:
            raise ValueError(f"need at least 2 rows of {len(columns)} values in {source}, got shape {tuple(values.shape)}")
        values = values.double()
        mean, std = values.mean(0), values.std(0)
        flat = [f"{c} (every value {float(m):g})" for c, m, s in zip(columns, mean, std) if not float(s) > 0]
        if flat and normalize:
            raise ValueError(f"zero-variance column(s) in {source}: {', '.join(flat)}; z-scoring would divide by zero. "
                             "Drop them from `data.columns`, or set data.normalize=false.")
        if flat:
            log.warning("zero-variance column(s) in %s: %s (std units use 1 for them)", source, ", ".join(flat))
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(list(columns), mean.tolist(), std.tolist(), bool(normalize))

    @classmethod
    def from_dict(cls, blob: Mapping[str, Any]) -> CondStats:
        return cls(list(blob["columns"]), [float(v) for v in blob["mean"]], [float(v) for v in blob["std"]],
                   bool(blob.get("normalize", True)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dim(self) -> int:
        return len(self.columns)

    def _mean_std(self, like: Tensor) -> tuple[Tensor, Tensor]:
        kw = {"dtype": torch.float32, "device": like.device}
        return torch.tensor(self.mean, **kw), torch.tensor(self.std, **kw)  # (D,), (D,)

    def zscore(self, raw: Tensor) -> Tensor:
        """(raw - mean) / std, whatever `normalize` says (the metric's "std units")."""
        mean, std = self._mean_std(raw)
        return (raw.float() - mean) / std

    def encode(self, raw: Tensor) -> Tensor:
        """Raw values [..., D] -> what the network sees (z-scores, or raw without `normalize`)."""
        return self.zscore(raw) if self.normalize else raw.float()

    def decode(self, fed: Tensor) -> Tensor:
        """What the network sees [..., D] -> raw values."""
        if not self.normalize:
            return fed.float()
        mean, std = self._mean_std(fed)
        return fed.float() * std + mean

    def raw_vector(self, values: Mapping[str, Any], key: str = "cond") -> Tensor:
        """A {column: raw value} mapping as a raw vector [D] in column order; clear errors name the config key."""
        names = {str(k) for k in values}
        missing, unknown = [c for c in self.columns if c not in names], sorted(names - set(self.columns))
        if missing or unknown:
            raise ConfigError.bad_value(key, f"it must give exactly the columns {self.columns}; missing {missing}, "
                                        f"unknown {unknown}", f"Example: {key}='{{{', '.join(f'{c}: {m:.3g}' for c, m in zip(self.columns, self.mean))}}}'")
        out = []
        for c in self.columns:
            try:
                value = float(values[c])
            except (TypeError, ValueError):
                value = math.nan
            if isinstance(values[c], bool) or not math.isfinite(value):
                raise ConfigError.bad_value(f"{key}.{c}", f"must be a finite number (raw units), got {values[c]!r}")
            out.append(value)
        return torch.tensor(out, dtype=torch.float32)


class VectorImageDataset(InMemoryImageDataset):
    """In-memory images with a condition vector per image (already encoded), batched on the fly."""

    def __init__(self, images: Tensor, labels: Tensor | None, cond: Tensor, resolution: int) -> None:
        super().__init__(images, labels, resolution, hflip=False)
        self.cond = cond.to(torch.float32)  # (N, D)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        batch = super().__getitems__(indices)
        batch["cond"] = self.cond[torch.as_tensor(indices, dtype=torch.long)]
        return batch


def condition_rows(datamodule: Any, split: str = "val") -> Tensor:
    """Every (encoded) condition vector of a split, in order: [N, D] (the vectors metrics and grids request)."""
    dataset = datamodule.split_dataset(split)
    if isinstance(getattr(dataset, "cond", None), Tensor):
        return dataset.cond  # without decoding the images
    rows = [b["cond"] for b, _ in datamodule.iter_batches(split, 0, len(datamodule.split_dataset(split)), 1024)]
    return torch.cat(rows)
