"""sample.py's sweeps and read-back of vector conditions.

- `sweep='{x3: [lo, hi, 9]}'` (`difflab.data.vectors.Sweep`): every value of the swept column is sampled from the
  same `sweep_seeds` starting noises (seed indices 0..sweep_seeds-1, all the randomness of a stochastic sampler
  included), so along a grid row only the swept value changes; the images are noise-major (`sampling.draw`).
- `regressor=<ckpt>` (`python train.py model=regressor ...`): the values a condition regressor reads from the
  8-bit images, written as `measured_<column>` next to the requested values in conditions.csv, summarised in
  samples.json (per column MAE in raw and std units; for a sweep the swept column's slope and R2 of measured
  on requested), and for a sweep drawn as `sweep.png` (requested against measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor

from difflab.data.vectors import CondStats
from difflab.errors import ConfigError
from difflab.lit.regressor import RegressorModule, load_regressor
from difflab.metrics.inception import quantize
from difflab.metrics.regression import VectorErrors


def load_reader(path: Any, stats: CondStats, sweep: Any = None) -> RegressorModule:
    """The regressor of `regressor=<ckpt>`, checked against the model's columns (and the swept one) before sampling."""
    reader = load_regressor(str(path), key="regressor")
    if not set(reader.columns) & set(stats.columns):
        raise ConfigError.bad_value("regressor", f"it reads {reader.columns}, none of this model's columns "
                                    f"{stats.columns}", "Use a regressor trained on the model's data "
                                    "(python train.py model=regressor data=...).")
    if sweep is not None and sweep.column not in reader.columns:
        raise ConfigError.bad_value("regressor", f"it does not read the swept column {sweep.column!r} (it reads "
                                    f"{reader.columns})", "Sweep a column it reads, or use a regressor of this data.")
    return reader


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def read_back(reader: RegressorModule, path: Any, images: Tensor, requests: Any, stats: CondStats
              ) -> tuple[list[dict[str, float]], dict[str, Any], Callable[[Path], Path] | None]:
    """(`measured_<column>` of each image, what samples.json records, the writer of a sweep's plot or None) for the
    model's columns the regressor reads."""
    measured = reader.predict(quantize(images))  # (N, D_reader) raw, read from the 8-bit images
    common = [c for c in reader.columns if c in stats.columns]
    got = measured[:, [reader.columns.index(c) for c in common]]
    asked = stats.decode(requests.vectors)[:, [stats.columns.index(c) for c in common]]  # (N, D_common) raw
    sub = CondStats(common, [stats.mean[stats.columns.index(c)] for c in common],
                    [stats.std[stats.columns.index(c)] for c in common])
    errors = VectorErrors(sub)
    errors.update(got, asked)
    values = errors.compute()
    record: dict[str, Any] = {"regressor": str(Path(str(path)).resolve()), "columns": common,
                              "mae": dict(zip(common, values["mae"].tolist())),
                              "mae_std": dict(zip(common, values["mae_std"].tolist()))}
    sweep = requests.sweep
    if sweep is not None:
        k = common.index(sweep.column)
        x, y = asked[:, k].double(), got[:, k].double()
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum())
        record["sweep"] = {"column": sweep.column, "slope": slope, "r2": _finite(float(values["r2"][k]))}
    rows = [{f"measured_{c}": v for c, v in zip(common, row)} for row in got.tolist()]
    plot = partial(plot_sweep, sweep=sweep, x=x, y=y, got=got, asked=asked, stats=sub) if sweep is not None else None
    return rows, record, plot


def plot_sweep(path: Path, *, sweep: Any, x: Tensor, y: Tensor, got: Tensor, asked: Tensor, stats: CondStats) -> Path:
    """sweep.png: the swept column's measured against requested values (each noise, their mean, the diagonal), and
    how far the held columns' readings move, in std units."""
    import matplotlib  # the Agg backend is chosen before pyplot is imported, and only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # the Agg backend is chosen before pyplot is imported, and only plots need it

    values = sweep.values.double()
    mean = y.reshape(sweep.seeds, sweep.count).mean(0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(x, y, "o", color="C0", alpha=0.4, label=f"measured ({sweep.seeds} noises)")
    left.plot(values, mean, "-", color="C0", label="mean")
    left.plot(values, values, "k:", label="requested")
    left.set(xlabel=f"requested {sweep.column}", ylabel=f"measured {sweep.column}", title=f"sweep of {sweep.column}")
    left.legend(fontsize=8), left.grid(alpha=0.3)
    drift = (stats.zscore(got) - stats.zscore(asked)).reshape(sweep.seeds, sweep.count, -1).mean(0)  # (count, D)
    for k, column in enumerate(stats.columns):
        if column != sweep.column:
            right.plot(values, drift[:, k], ".-", label=column)
    right.axhline(0, color="k", ls=":")
    right.set(xlabel=f"requested {sweep.column}", ylabel="measured - requested (std units)", title="held columns")
    right.legend(fontsize=7, ncol=2), right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
