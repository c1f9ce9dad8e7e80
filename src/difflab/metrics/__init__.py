"""Sample-quality metrics, pure: FID/KID/IS (one Inception pass), LPIPS diversity, CLIP score, broken samples,
condition accuracy / MAE, vector errors. Running them over a model's samples is `difflab.evaluation`."""

from difflab.metrics.conditions import ConditionAccuracy, ConditionMAE
from difflab.metrics.fidelity import FeatureStore, ReferenceStats, fidelity_scores, reference_cache_path
from difflab.metrics.inception import InceptionFeatures, to_uint8_rgb
from difflab.metrics.perceptual import CLIPScoreMetric, LPIPSDiversity, clip_model_loader, lpips_network
from difflab.utils.weights import MetricWeightsError, resolve_weights

__all__ = [
    "CLIPScoreMetric",
    "ConditionAccuracy",
    "ConditionMAE",
    "FeatureStore",
    "InceptionFeatures",
    "LPIPSDiversity",
    "MetricWeightsError",
    "ReferenceStats",
    "clip_model_loader",
    "fidelity_scores",
    "lpips_network",
    "reference_cache_path",
    "resolve_weights",
    "to_uint8_rgb",
]
