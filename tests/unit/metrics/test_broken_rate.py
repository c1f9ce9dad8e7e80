"""The broken-sample rate: no real digit is broken; speckled, solid and saturated images are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from difflab.data import DigitsDataModule
from difflab.errors import ConfigError
from difflab.evaluation import MetricSuite, MetricsConfig
from difflab.metrics import to_uint8_rgb
from difflab.metrics.broken import BrokenRate, BrokenThresholds


def _split(dm: DigitsDataModule, split: str) -> torch.Tensor:
    n = len(dm.split_dataset(split))
    return torch.cat([x for x, _ in dm.iter_images(split, 0, n, 500)])


@pytest.fixture(scope="module")
def digits() -> tuple[BrokenThresholds, torch.Tensor]:
    dm = DigitsDataModule(resolution=16)
    return BrokenThresholds.from_images([_split(dm, "val")], "val"), _split(dm, "train")


def test_no_real_digit_is_broken(digits) -> None:  # noqa: ANN001
    thresholds, train = digits
    assert thresholds.count == 180 and thresholds.split == "val"
    assert not thresholds.broken(train)["broken"].any()  # the other split, 1,617 digits


def test_speckled_solid_and_saturated_images_are_flagged_for_their_reason(digits) -> None:  # noqa: ANN001
    thresholds, train = digits
    real = train[:64]
    g = torch.Generator().manual_seed(0)
    cases = {
        "speckle": (real + 0.4 * torch.randn(real.shape, generator=g)).clamp(-1, 1),
        "solid": torch.cat([torch.ones(8, 1, 16, 16), -torch.ones(8, 1, 16, 16), torch.full((8, 1, 16, 16), 0.3)]),
        "saturated": (3 * real + 1).clamp(-1, 1),  # a white blob: most pixels at the top value
    }
    for reason, images in cases.items():
        flags = thresholds.broken(images)
        assert flags["broken"].all(), reason
        assert flags[reason].float().mean() > 0.9, reason
    assert thresholds.broken(-torch.ones(2, 1, 16, 16))["saturated"].all()  # solid black is also all at 0


def test_rate_counts_images_and_equals_the_rate_of_the_saved_pngs(digits) -> None:  # noqa: ANN001
    thresholds, train = digits
    mixed = torch.cat([train[:6], torch.ones(2, 1, 16, 16)])
    metric = BrokenRate(thresholds)
    metric.update(mixed[:5])
    metric.update(mixed[5:])
    assert float(metric.compute()) == pytest.approx(2 / 8)
    as_png = to_uint8_rgb(mixed)[:, :1]  # uint8, as read back from the PNG files
    assert torch.equal(thresholds.broken(as_png)["broken"], thresholds.broken(mixed)["broken"])


def test_suite_reports_broken_rate_without_any_pretrained_weights(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pth")
    config = MetricsConfig(n_samples=4, reference={"split": "train", "n": 8}, cache_dir=str(tmp_path),
                           clip_score=False, weights={"inception": missing, "lpips_alexnet": missing}, download=False)
    suite = MetricSuite(config)
    assert suite.active == ["broken_rate"]
    dm = DigitsDataModule(resolution=16)
    suite.prepare_reference(dm)
    suite.update(torch.cat([_split(dm, "train")[:3], torch.ones(1, 1, 16, 16)]), torch.arange(4))
    assert suite.compute() == {"broken_rate": 0.25}
    assert suite.protocol()["broken_thresholds"]["count"] == 180
    with pytest.raises(ConfigError, match="metrics.broken_split"):
        MetricsConfig(broken_split="test")
