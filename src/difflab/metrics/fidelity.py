"""FID, KID and Inception Score from one Inception pass, correct under DDP, with cached real statistics.

The statistics are torch-fidelity's own functions (`fid_features_to_statistics`,
`fid_statistics_to_metric`, `kid_features_to_metric`, `isc_features_to_metric`), applied to
features that difflab gathers across ranks and orders by sample index, so the value does not
depend on the number of processes or the batch size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from difflab.metrics.inception import FeatureExtractor
from difflab.utils.checkpoint_files import atomic_save

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class FeatureStore(Metric):
    """Accumulates (sample index, Inception features, logits); `compute()` returns them across ranks, sorted."""

    full_state_update = False

    def __init__(self, extractor: FeatureExtractor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extractor = extractor
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("logits", default=[], dist_reduce_fx="cat")

    def update(self, images: Tensor, index: Tensor) -> None:  # type: ignore[override]
        """Add images ([-1, 1] float or uint8, [N, C, H, W]) whose global sample indices are `index` [N]."""
        features, logits = self.extractor(images.to(self.device))
        self.index.append(index.to(self.device, torch.int64))
        self.features.append(features.float())
        self.logits.append(logits.float())

    def compute(self) -> tuple[Tensor, Tensor]:
        """(features [N, D], logits [N, K]) of all ranks on CPU, ordered by sample index; raises on duplicates."""
        if isinstance(self.index, list) and not self.index:  # after a DDP sync the states are tensors
            raise ValueError("no images were added to the Inception feature store")
        index = dim_zero_cat(self.index).cpu()
        order = torch.argsort(index)
        if index.numel() > 1 and bool((index[order][1:] == index[order][:-1]).any()):
            raise ValueError("the same sample index was added twice (overlapping shards across ranks?)")
        return dim_zero_cat(self.features).cpu()[order], dim_zero_cat(self.logits).cpu()[order]


@dataclass
class ReferenceStats:
    """Real-data Inception statistics: mean, covariance (torch-fidelity's dtypes) and the features for KID."""

    mu: np.ndarray
    sigma: np.ndarray
    features: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_features(cls, features: Tensor, meta: dict[str, Any]) -> ReferenceStats:
        from torch_fidelity.metric_fid import (
            fid_features_to_statistics,  # heavy to import; only the Inception network needs it
        )

        stats = fid_features_to_statistics(features.float().cpu())
        return cls(stats["mu"], stats["sigma"], features.float().cpu(), dict(meta, count=int(features.shape[0])))

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a killed run never leaves a half-written cache."""
        atomic_save({"format": CACHE_FORMAT, "meta": self.meta, "mu": torch.from_numpy(self.mu),
                     "sigma": torch.from_numpy(self.sigma), "features": self.features}, path)

    @classmethod
    def load(cls, path: Path, expected_meta: dict[str, Any]) -> ReferenceStats:
        """Read a cache file; refuses one whose recorded protocol differs from `expected_meta`."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob.get("meta", {})
        stale = {k: (meta.get(k), v) for k, v in expected_meta.items() if meta.get(k) != v}
        if blob.get("format") != CACHE_FORMAT or stale:
            raise ValueError(f"reference statistics '{path}' do not match this protocol {stale}; delete the file")
        return cls(blob["mu"].numpy(), blob["sigma"].numpy(), blob["features"], meta)


def reference_cache_path(cache_dir: str | Path, meta: dict[str, Any]) -> Path:
    """`<dataset>-<split>-<res>px-n<count>-inception-<hash>.pt`: every field that changes the statistics."""
    name = f"{meta['dataset']}-{meta['split']}-{meta['resolution']}px-n{meta['count']}-inception-{meta['weights_hash']}.pt"
    return Path(cache_dir) / name


def fidelity_scores(
    features: Tensor,
    logits: Tensor,
    reference: ReferenceStats | None,
    *,
    fid: bool = True,
    kid: bool = True,
    inception_score: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    isc_splits: int = 10,
    seed: int = 2020,
) -> dict[str, float]:
    """FID / KID (mean, std) / IS (mean, std) of generated features against `reference`.

    The KID subset size is capped at the smaller sample count (torch-fidelity requires it);
    callers record the size used (`kid_subset_size_used` in the result).
    """
    from torch_fidelity.metric_fid import (  # heavy to import; only the Inception network needs it
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )
    from torch_fidelity.metric_isc import (
        isc_features_to_metric,  # heavy to import; only the Inception network needs it
    )
    from torch_fidelity.metric_kid import (
        kid_features_to_metric,  # heavy to import; only the Inception network needs it
    )

    out: dict[str, float] = {}
    if (fid or kid) and reference is None:
        raise ValueError("FID/KID need reference statistics")
    if fid:
        stats = fid_features_to_statistics(features.float())
        out["fid"] = fid_statistics_to_metric(stats, {"mu": reference.mu, "sigma": reference.sigma}, verbose=False)[
            "frechet_inception_distance"
        ]
    if kid:
        size = min(kid_subset_size, features.shape[0], reference.features.shape[0])
        res = kid_features_to_metric(
            features.float(), reference.features, kid_subsets=kid_subsets, kid_subset_size=size, verbose=False,
            kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1,
            rng_seed=seed,
        )
        out["kid"], out["kid_std"], out["kid_subset_size_used"] = res["kernel_inception_distance_mean"], res[
            "kernel_inception_distance_std"], float(size)
    if inception_score:
        res = isc_features_to_metric(logits.float(), splits=isc_splits, shuffle=True, rng_seed=seed)
        out["is"], out["is_std"] = res["inception_score_mean"], res["inception_score_std"]
    return out

