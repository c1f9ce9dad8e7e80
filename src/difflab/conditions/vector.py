"""A vector of measured values per image: the condition of vector-conditional models (raw units in, z-scores to
the network)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.conditions.base import Input, Requests, TensorCondition, _mapping
from difflab.data.csv_table import read_table
from difflab.data.vectors import CondStats, check_representable, condition_rows, parse_sweep
from difflab.errors import ConfigError, IncompatibleCheckpointError


class Vector(TensorCondition):
    """A vector of measured values per image from `batch["cond"]` (z-scored by the training split's `CondStats`);
    the null vector is a row of NaN (`VectorEmbedding`'s learned null embedding)."""

    kind, key, inputs = "vector", "cond", ("cond", "cond_csv", "sweep", "regressor")
    checks, guided = frozenset({"cond_mae"}), True

    def __init__(self, drop_prob: float = 0.1) -> None:
        super().__init__(drop_prob)
        self.stats: Any = None  # CondStats of the training split, from the data module or the checkpoint

    def describe(self) -> str:
        columns = f" on {self.stats.columns}" if self.stats is not None else ""
        return f"conditioned on a vector of values{columns}"

    def widgets(self) -> list[Input]:
        """One number per column in raw units: mean +- 3 std of the training split, starting at the mean."""
        if self.stats is None:
            return []
        return [Input("cond", "number", f"{name} (raw units; mean {mean:.4g}, std {std:.4g})",
                      low=float(f"{mean - 3 * std:.4g}"), high=float(f"{mean + 3 * std:.4g}"), value=float(f"{mean:.4g}"),
                      step=float(f"{std / 100:.2g}"), column=name)
                for name, mean, std in zip(self.stats.columns, self.stats.mean, self.stats.std)]


    def null(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, float("nan"))

    def draw(self, n: int, datamodule: Any = None, prompts: Sequence[str] | None = None) -> Requests:
        """Image i gets validation vector i mod N (real, jointly plausible values)."""
        if datamodule is None:
            raise ConfigError("A vector-conditioned model draws its conditions from the validation split: "
                              "pass data=<the data set it was trained on>.")
        rows = condition_rows(datamodule, "val")
        vectors = rows[torch.arange(n) % len(rows)]
        return Requests(vectors, None, vectors, None)

    def _require_stats(self) -> Any:
        if self.stats is None:
            raise IncompatibleCheckpointError("This vector-conditioned checkpoint holds no condition statistics "
                                              "(`cond_stats`): it was not trained on vector data. Use a checkpoint "
                                              "of `python train.py model=cond_vector data=...`.")
        return self.stats

    def parse(self, inputs: Mapping[str, Any], n: int) -> Requests:
        """`cond=` (one vector for all n images), `cond_csv=` (one per row) or `sweep=` (one column varied)."""
        self.refuse_foreign(inputs)
        stats = self._require_stats()
        if inputs.get("cond_csv") is not None and inputs.get("sweep") is not None:
            raise ConfigError("Config keys `cond_csv` and `sweep` both given: pass one vector per row of a CSV file "
                              "(cond_csv=...) or one column swept over a range (sweep=...), not both.")
        if inputs.get("cond_csv") is not None:
            return self._parse_table(inputs)
        if inputs.get("sweep") is not None:
            return self._parse_sweep(inputs)
        values = _mapping(inputs.get("cond"))
        example = ", ".join(f"{c}: {m:.3g}" for c, m in zip(stats.columns, stats.mean))
        if not isinstance(values, Mapping):
            raise ConfigError.bad_value("cond", f"this model is conditioned on {stats.columns} and needs one raw "
                                        f"value per column, got {inputs.get('cond')!r}",
                                        f"Pass cond='{{{example}}}' (raw units).")
        raw = stats.raw_vector(values, key="cond")
        return self.requests_of(raw.expand(n, -1), "cond")

    def _parse_table(self, inputs: Mapping[str, Any]) -> Requests:
        """`cond_csv=<file>`: one image per row, the columns named as in training (raw units)."""
        if inputs.get("cond") is not None:
            raise ConfigError("Config keys `cond` and `cond_csv` both given: pass one vector for every image (cond=...) "
                              "or one per row of a CSV file (cond_csv=...), not both.")
        columns = self.stats.columns
        _, _, raw = read_table(Path(str(inputs["cond_csv"])).expanduser(), None, columns, key="cond_csv", min_rows=1,
                               exact=True)
        return self.requests_of(raw, "cond_csv", rows=list(range(2, raw.shape[0] + 2)))

    def _parse_sweep(self, inputs: Mapping[str, Any]) -> Requests:
        """`sweep='{x3: [lo, hi, count]}'`: x3 at `count` values, the other columns at `cond=` (any of them) or the
        training mean, for `sweep_seeds` starting noises (`difflab.data.vectors.Sweep`)."""
        held = _mapping(inputs.get("cond"))
        if held is not None and not isinstance(held, Mapping):
            raise ConfigError.bad_value("cond", f"{inputs.get('cond')!r} is not a mapping of columns to raw values",
                                        "With sweep=..., cond='{<column>: <value>, ...}' holds any of the other "
                                        "columns (the rest stay at the training mean).")
        sweep = parse_sweep(_mapping(inputs["sweep"]), self.stats, held, inputs.get("sweep_seeds", 1))
        requests = self.requests_of(sweep.raw(self.stats.columns), "sweep")
        requests.sweep = sweep
        return requests

    def requests_of(self, raw: Tensor, key: str = "cond", rows: list[int] | None = None) -> Requests:
        """Requests of raw vectors [n, D] (encoded as the network saw its training data, float32); a value that
        float32 cannot hold, raw or encoded, is a ConfigError naming `key`, the column and the CSV row (`rows`)."""
        stats = self._require_stats()
        vectors = stats.encode(raw)
        check_representable(raw, vectors, stats, key, rows)
        return Requests(vectors, None, vectors, None)

    def record(self, requests: Requests) -> dict[str, Any]:
        rows = self.rows(requests)
        sweep = {"sweep": requests.sweep.record(self.stats.columns)} if requests.sweep is not None else {}
        return {"cond": rows[0] if all(r == rows[0] for r in rows) else rows, **sweep}

    def rows(self, requests: Requests) -> list[dict[str, Any]]:
        raw = self._require_stats().decode(requests.vectors)  # the raw units the user asked in
        return [dict(zip(self.stats.columns, r)) for r in raw.tolist()]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "columns": None if self.stats is None else list(self.stats.columns)}

    def setup(self, datamodule: Any) -> None:
        stats = getattr(datamodule, "cond_stats", None)
        if stats is None:
            name = getattr(datamodule, "name", type(datamodule).__name__)
            raise ConfigError(f"A vector-conditioned model (model=cond_vector) needs data with a vector of values per "
                              f"image, and {name} has none: use data=shapes or data=csv data.csv=<file>.")
        self.stats = stats

    def state_dict(self) -> dict[str, Any]:
        return {} if self.stats is None else {"cond_stats": self.stats.to_dict()}

    def load_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        if checkpoint.get("cond_stats"):
            self.stats = CondStats.from_dict(checkpoint["cond_stats"])
