"""IS is honest: weights without a classifier head (a zero-filled fc, every logit 0) give no IS, with the reason,
never a value of 1.00; FID/KID stay; the record, the logs and the comparison table say why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from difflab.compare.table import NOT_COMPUTED, build_table, to_markdown
from difflab.evaluation import MetricSuite, MetricsConfig, Networks
from difflab.evaluation.score import metrics_record
from difflab.metrics.inception import classifier_missing
from fakes import ASSETS, TinyExtractor

INCEPTION = ASSETS / "inception" / "inception_fid_trunk.pth"


class HeadlessExtractor(TinyExtractor):
    """The tiny extractor with the zero-filled head of the shared Inception file: every logit is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.zeros_like(self.head)
        self.no_classifier = classifier_missing(self.head, "headless.pth")


def _suite(tmp_path: Path, extractor: type[TinyExtractor]) -> MetricSuite:
    config = MetricsConfig(kid_subsets=5, kid_subset_size=8, isc_splits=2, lpips_diversity=False, clip_score=False,
                           cache_dir=str(tmp_path))
    return MetricSuite(config, networks=Networks(inception=extractor))


def test_classifier_missing_tells_a_zero_head_from_a_real_one() -> None:
    assert classifier_missing(torch.randn(4, 3), "x.pth") is None
    reason = classifier_missing(torch.zeros(4, 3), "x.pth")
    assert "x.pth" in reason and "no classifier head" in reason and "metrics.weights.inception" in reason


def test_headless_weights_give_no_inception_score_but_a_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    with caplog.at_level(logging.WARNING, logger="difflab.evaluation.suite"):
        suite = _suite(tmp_path, HeadlessExtractor)
    assert [r.message for r in caplog.records].count(f"Inception Score not computed: {suite.unavailable['is']}.") == 1
    assert "inception_score" not in suite.active and {"fid", "kid"} <= set(suite.active)
    suite.reference = None
    suite.config.fid = suite.config.kid = False  # no reference set here: the IS path alone
    suite.update(images, torch.arange(16))
    values = suite.compute()
    assert "is" not in values and "is_std" not in values  # never 1.00, never logged
    # the same images with a real head do get an IS (> 1): the switch is the head, nothing else
    real = _suite(tmp_path, TinyExtractor)
    real.config.fid = real.config.kid = False
    real.update(images, torch.arange(16))
    assert real.compute()["is"] > 1.0 and real.unavailable == {}

    record = metrics_record(kind="evaluate", values=values, protocol=suite.protocol(), module=None, n_samples=16,
                            seed=0, run_dir=tmp_path)
    assert record["values"]["is"] is None and "no classifier head" in record["protocol"]["unavailable"]["is"]
    row, = build_table([{**record, "variant": "ddpm"}])
    assert row["is"] is None
    table = to_markdown([row])
    is_column = table.splitlines()[0].split("|").index(" IS ↑ ")
    assert table.splitlines()[2].split("|")[is_column].strip() == NOT_COMPUTED
    assert f"{NOT_COMPUTED} = not computed. IS ↑: the Inception weights 'headless.pth'" in table


@pytest.mark.skipif(not INCEPTION.is_file(), reason=f"needs {INCEPTION}")
def test_the_shared_inception_file_is_recognised_as_headless(tmp_path: Path) -> None:
    from difflab.metrics.inception import InceptionFeatures

    extractor = InceptionFeatures(str(INCEPTION), download=False)
    assert extractor.no_classifier is not None and str(INCEPTION) in extractor.no_classifier
    features, logits = extractor(torch.zeros(1, 3, 8, 8))
    assert features.abs().sum() > 0 and not logits.any()  # real features, zero logits: IS would be exactly 1
