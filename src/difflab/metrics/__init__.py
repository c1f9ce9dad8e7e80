"""Sample-quality metrics: FID, KID, IS (one Inception pass), LPIPS diversity, CLIP score, throughput."""

from difflab.metrics.evaluation import metrics_record, sample_and_score, write_record
from difflab.metrics.fidelity import FeatureStore, ReferenceStats, fidelity_scores, reference_cache_path
from difflab.metrics.inception import InceptionFeatures, to_uint8_rgb
from difflab.metrics.perceptual import CLIPScoreMetric, LPIPSDiversity, clip_model_loader, lpips_network
from difflab.metrics.suite import MetricsConfig, MetricSuite, Networks, shard
from difflab.metrics.weights import MetricWeightsError, resolve_weights

__all__ = [
    "CLIPScoreMetric",
    "FeatureStore",
    "InceptionFeatures",
    "LPIPSDiversity",
    "MetricSuite",
    "MetricWeightsError",
    "MetricsConfig",
    "Networks",
    "ReferenceStats",
    "clip_model_loader",
    "fidelity_scores",
    "lpips_network",
    "metrics_record",
    "reference_cache_path",
    "resolve_weights",
    "sample_and_score",
    "shard",
    "to_uint8_rgb",
    "write_record",
]
