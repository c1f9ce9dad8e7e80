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

from difflab.data.base import InMemoryImageDataset
from difflab.data.files import Batch
from difflab.errors import ConfigError

log = logging.getLogger(__name__)

F32_MAX = float(torch.finfo(torch.float32).max)  # vectors reach the network as float32


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

    def unzscore(self, z: Tensor) -> Tensor:
        """z * std + mean: z-scores [..., D] (the regressor's output) -> raw values, whatever `normalize` says."""
        mean, std = self._mean_std(z)
        return z.float() * std + mean

    def encode(self, raw: Tensor) -> Tensor:
        """Raw values [..., D] -> what the network sees (z-scores, or raw without `normalize`)."""
        return self.zscore(raw) if self.normalize else raw.float()

    def decode(self, fed: Tensor) -> Tensor:
        """What the network sees [..., D] -> raw values."""
        return self.unzscore(fed) if self.normalize else fed.float()

    def raw_vector(self, values: Mapping[str, Any], key: str = "cond", default: Sequence[float] | None = None) -> Tensor:
        """A {column: raw value} mapping as a raw float64 vector [D] in column order (columns it leaves out take `default`'s
        values when given); clear errors name the config key."""
        names = {str(k) for k in values}
        missing, unknown = [c for c in self.columns if c not in names], sorted(names - set(self.columns))
        if default is not None:
            values = {**dict(zip(self.columns, default)), **values}
            missing = []
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
        return torch.tensor(out, dtype=torch.float64)  # float32 is checked with the encoding (`check_representable`)


@dataclass
class Sweep:
    """Column `column` at `count` evenly spaced raw values from `lo` to `hi`, every other column held at `held`
    (raw [D]), for each of `seeds` starting noises: image r * count + j is noise r at value j."""

    column: str
    lo: float
    hi: float
    count: int
    held: Tensor
    seeds: int = 1

    @property
    def values(self) -> Tensor:
        """The swept raw values [count] (float64)."""
        return torch.linspace(self.lo, self.hi, self.count, dtype=torch.float64)

    def raw(self, columns: Sequence[str]) -> Tensor:
        """The raw vectors [seeds * count, D] of the images (float64), noise-major."""
        rows = self.held.double().repeat(self.count, 1)  # (count, D)
        rows[:, list(columns).index(self.column)] = self.values
        return rows.repeat(self.seeds, 1)

    def record(self, columns: Sequence[str]) -> dict[str, Any]:
        """What samples.json records about the sweep."""
        return {"column": self.column, "values": self.values.tolist(), "seeds": self.seeds,
                "held": {c: float(v) for c, v in zip(columns, self.held.tolist()) if c != self.column},
                "layout": "image r * count + j: starting noise r (seed index r), value j"}


def check_representable(raw: Tensor, fed: Tensor, stats: CondStats, key: str, rows: Sequence[int] | None = None) -> None:
    """Raw values [n, D] (float64) and what the network is fed [n, D] (float32) hold no NaN or infinity: a value
    beyond float32's range (1e39 is finite in float64, inf in float32) or one whose z-score overflows is a
    ConfigError naming `key`, the column and (`rows`: the CSV line of each vector) the row."""
    bad = ~(torch.isfinite(raw.float()) & torch.isfinite(fed))
    if not bool(bad.any()):
        return
    i, j = (int(v) for v in bad.nonzero()[0])
    column, value = stats.columns[j], float(raw[i, j])
    if not torch.isfinite(raw[i, j].float()):
        reason = f"{value:g} is beyond the largest float32 value ({F32_MAX:.4g}), the number type of the model"
    else:
        reason = f"its z-score ({value:g} - {stats.mean[j]:g}) / {stats.std[j]:g} overflows float32"
    where = f"row {rows[i]}, column '{column}'" if rows is not None else f"column '{column}'"
    example = ", ".join(f"{c}: {m:.3g}" for c, m in zip(stats.columns, stats.mean))
    raise ConfigError.bad_value(key if rows is not None else f"{key}.{column}", f"{where}: {reason}",
                                f"Pass values in the range of the training data (its means: {example}).")


def _number(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError.bad_value(key, f"{value!r} is not a finite number")
    return number


def parse_sweep(spec: Mapping[str, Any], stats: CondStats, held: Mapping[str, Any] | None, seeds: Any,
                key: str = "sweep") -> Sweep:
    """`sweep={column: [lo, hi, count]}` over a model's columns, the others at `held` (a partial {column: raw
    value} mapping, `cond=`) or else the training mean; errors name the key and the fix."""
    example = f"Example: {key}='{{{stats.columns[0]}: [{stats.mean[0] - stats.std[0]:.3g}, {stats.mean[0] + stats.std[0]:.3g}, 9]}}'"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError.bad_value(key, f"{spec!r} must name one column and its range [lo, hi, count]", example)
    (column, bounds), = spec.items()
    if str(column) not in stats.columns:
        raise ConfigError.bad_value(key, f"{column!r} is not a column of this model, whose columns are {stats.columns}",
                                    example)
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 3:
        raise ConfigError.bad_value(f"{key}.{column}", f"{bounds!r} is not [lo, hi, count]", example)
    lo, hi = _number(bounds[0], f"{key}.{column}"), _number(bounds[1], f"{key}.{column}")
    count = bounds[2]
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ConfigError.bad_value(f"{key}.{column}", f"the count {count!r} must be an integer >= 2", example)
    if not lo < hi:
        raise ConfigError.bad_value(f"{key}.{column}", f"lo {lo:g} must be below hi {hi:g}", example)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError.bad_value("sweep_seeds", f"{seeds!r} must be an integer >= 1 (starting noises: grid rows)")
    held = dict(held or {})
    if str(column) in held:
        raise ConfigError(f"Config keys `cond` and `sweep` both set {column}: the swept column takes the sweep's "
                          f"values; remove {column} from cond=... .")
    return Sweep(str(column), lo, hi, count, stats.raw_vector(held, key="cond", default=stats.mean), seeds)


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
