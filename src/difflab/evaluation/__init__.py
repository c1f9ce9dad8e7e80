"""Evaluating models: the configured metric suite fed with a model's samples, the condition classifiers it trains,
the likelihood of real data, and the `metrics.json` record that compare.py and the studio read."""

from difflab.evaluation.score import metrics_record, sample_and_score, write_record
from difflab.evaluation.suite import MetricsConfig, MetricSuite, Networks

__all__ = ["MetricSuite", "MetricsConfig", "Networks", "metrics_record", "sample_and_score", "write_record"]
