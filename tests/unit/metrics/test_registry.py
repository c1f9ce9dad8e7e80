"""The metric registry is the one list of metrics: a toy metric registered there alone is computed by the suite,
tabled by compare.py and shown in the studio's Runs tab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchmetrics import Metric as TorchMetric

from difflab.compare import build_table, collect_local, to_markdown
from difflab.errors import ConfigError
from difflab.evaluation import MetricsConfig, MetricSuite
from difflab.metrics.registry import METRICS, Metric, load_all, register, unregister
from difflab.studio.files import Folders
from difflab.studio.runs import headers, table_values


class Brightness(TorchMetric):
    """Mean pixel value of the images, in [0, 1] (summed across ranks)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, index: torch.Tensor) -> None:  # type: ignore[override]
        self.total += ((images.double() + 1) / 2).mean(dim=(1, 2, 3)).sum()
        self.count += images.shape[0]

    def compute(self) -> torch.Tensor:
        return self.total / self.count


@pytest.fixture
def toy():
    metric = register(Metric("brightness", "brightness ↑", "{:.3f}".format, "higher",
                             build=lambda config, device: Brightness().to(device)))
    yield metric
    unregister("brightness")


def plain_config(**kwargs) -> MetricsConfig:
    off = dict(fid=False, kid=False, inception_score=False, lpips_diversity=False, clip_score=False,
               broken_rate=False, condition_accuracy=False, cond_mae=False)
    return MetricsConfig(n_samples=4, **{**off, **kwargs})


def test_a_toy_metric_registered_alone_reaches_the_suite_compare_and_the_studio(toy, tmp_path: Path) -> None:
    images = torch.linspace(-1, 1, 4).reshape(4, 1, 1, 1).expand(4, 1, 4, 4)  # brightness 0, 1/3, 2/3, 1
    suite = MetricSuite(plain_config(plugins={"brightness": True}))
    suite.update(images, torch.arange(4))
    values = suite.compute()
    assert values == {"brightness": pytest.approx(0.5)} and "brightness" in suite.active
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"kind": "evaluate", "variant": "ddpm", "values": values}))
    rows = build_table(collect_local(tmp_path / "runs"))
    assert rows[0]["brightness"] == pytest.approx(0.5)
    table = to_markdown(rows)
    assert "brightness ↑" in table.splitlines()[0] and "| 0.500 |" in table
    assert "brightness ↑" in headers()
    cells = table_values(rows, Folders.of(tmp_path / "runs", []))[0]
    assert cells[headers().index("brightness ↑")] == pytest.approx(0.5)


def test_a_plugin_is_off_unless_switched_on_and_an_unknown_one_is_named(toy) -> None:
    suite = MetricSuite(plain_config())
    assert "brightness" not in suite.active
    with pytest.raises(ConfigError, match=r"metrics.plugins.brighness.*brightness"):
        plain_config(plugins={"brighness": True})


def test_the_built_in_metrics_are_registered_once_with_a_direction() -> None:
    load_all()
    assert list(METRICS)[:4] == ["nfe", "samples_per_sec", "fid", "broken_rate"]
    assert METRICS["fid"].better == "lower" and METRICS["is"].better == "higher" and METRICS["nfe"].better == ""
    with pytest.raises(ValueError, match="registered already"):
        register(Metric("fid", "another FID", better="higher"))
