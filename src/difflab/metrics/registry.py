"""The metric registry: every metric's name, switch, label, format and direction, declared once.

The metric suite (`difflab.evaluation.suite`), evaluate.py, compare.py's table and the studio's Runs tab read their
metric lists from here. A metric is one `Metric` entry: `name` is its key in a record's `values` (metrics.json) and
its table column; `switch` the `MetricsConfig` field that turns it on (None: always computed when its inputs are
there); `label`, `fmt` and `better` how tables show it.

A new metric is one file in this package that calls `register(...)` with a `build` factory (returning an object with
`update(images, index, **inputs)` and `compute() -> float`) plus its config line under `metrics.plugins` (e.g.
`plugins: {sharpness: true}` in conf/metrics/default.yaml): the suite builds, feeds and computes it, and compare.py,
evaluate.py and the studio show it. Modules of this package are imported by `load_all` before a registry is read.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Formatter = Callable[[float], str]


def _rate(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


@dataclass(frozen=True)
class Metric:
    """One metric as tables and the suite know it."""

    name: str                          # the key in `values` and the table column
    label: str                         # the column header ("FID ↓")
    fmt: Formatter = "{:.4g}".format   # how a value is shown
    better: str = ""                   # "lower", "higher", or "" (a measurement without a direction)
    switch: str | None = None          # the MetricsConfig field that turns it on (plugins: the name itself)
    build: Callable[..., Any] | None = None  # plugins: (config, device) -> object with update / compute
    studio: bool = True                # a column of the studio's Runs tab

    def __post_init__(self) -> None:
        if self.better not in ("", "lower", "higher"):
            raise ValueError(f"metric {self.name!r}: better must be 'lower', 'higher' or '', got {self.better!r}")


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric to the registry (its name must be new)."""
    if metric.name in METRICS and METRICS[metric.name] != metric:
        raise ValueError(f"a metric named {metric.name!r} is registered already")
    METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (tests that register a toy one clean up with this)."""
    METRICS.pop(name, None)


_LOADED = False


def load_all() -> dict[str, Metric]:
    """Import every module of difflab.metrics once (each registers its metrics) and return the registry."""
    global _LOADED
    if not _LOADED:
        package = importlib.import_module(__package__)  # difflab.metrics: its plugin files register on import
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _LOADED = True
    return METRICS


def plugins() -> list[Metric]:
    """The registered metrics the suite builds from their `build` factory."""
    return [m for m in load_all().values() if m.build is not None]


for _metric in (
    Metric("nfe", "NFE", lambda x: f"{x:g}"),
    Metric("samples_per_sec", "samples/s", _rate),
    Metric("fid", "FID ↓", "{:.2f}".format, "lower", "fid"),
    Metric("broken_rate", "broken ↓", "{:.1%}".format, "lower", "broken_rate"),
    Metric("is", "IS ↑", "{:.2f}".format, "higher", "inception_score", studio=False),
    Metric("kid", "KID ↓", "{:.4f}".format, "lower", "kid"),
    Metric("lpips_diversity", "LPIPS div. ↑", "{:.3f}".format, "higher", "lpips_diversity"),
    Metric("clip_score", "CLIP ↑", "{:.2f}".format, "higher", "clip_score"),
    Metric("condition_accuracy", "cond. acc. ↑", "{:.3f}".format, "higher", "condition_accuracy"),
    Metric("cond_mae", "cond. MAE ↓", "{:.4g}".format, "lower", "cond_mae"),
    Metric("cond_mae_std", "cond. MAE (std) ↓", "{:.3f}".format, "lower", "cond_mae", studio=False),
    Metric("bpd", "bits/dim ↓", "{:.3f}".format, "lower", studio=False),
    Metric("rfid", "rFID ↓", "{:.2f}".format, "lower", studio=False),
    Metric("psnr", "PSNR ↑", "{:.2f}".format, "higher", studio=False),
):
    register(_metric)
