"""The configured set of metrics (`conf/metrics/*.yaml`), built once, fed with samples, computed across ranks.

Used by the in-training callback and by `evaluate.py`, so both give the same numbers under the
same protocol. `broken_rate` (see `difflab.metrics.broken`) needs no network and is always available. A metric whose network weights cannot be found is skipped with one warning
(`strict=False`, training) or raises `MetricWeightsError` (`strict=True`, evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from difflab.errors import ConfigError
from difflab.evaluation.classifier import load_or_train_classifier
from difflab.lit.regressor import load_regressor
from difflab.metrics import registry
from difflab.metrics.broken import BrokenRate, BrokenThresholds
from difflab.metrics.conditions import ConditionAccuracy, ConditionMAE
from difflab.metrics.fidelity import (
    FeatureStore,
    ReferenceStats,
    fidelity_scores,
    reference_cache_path,
)
from difflab.metrics.inception import FeatureExtractor, InceptionFeatures
from difflab.metrics.perceptual import (
    CLIPScoreMetric,
    LPIPSDiversity,
    clip_model_loader,
    lpips_network,
)
from difflab.utils.cluster import reduce_scalar, shard, world
from difflab.utils.progress import Progress
from difflab.utils.weights import MetricWeightsError

log = logging.getLogger(__name__)

FIDELITY = ("fid", "kid", "inception_score")


NLL_DEFAULTS: dict[str, Any] = {
    "enabled": False,        # bits/dim through the probability-flow ODE (Song et al. 2021, App. D.2)
    "split": "val",
    "n": 128,                # first n images of the split (null = all)
    "batch_size": 64,
    "estimator": "rademacher",  # rademacher | gaussian (Hutchinson) | exact (tiny images only)
    "rtol": 1e-5,
    "atol": 1e-5,
    "seed": 0,               # per-image seeds for the dequantisation noise and the probe
}


@dataclass
class MetricsConfig:
    """What to measure and how; one preset per `conf/metrics/{none,fast,default,full}.yaml`."""

    every_n_steps: int = 5000          # training: sample and score every N steps (and at the end); 0 = end only
    n_samples: int = 2000              # generated images per evaluation (0 disables the callback)
    batch_size: int = 250              # sampling batch per rank
    seed: int = 1                      # per-image seeds hash (seed, i); distinct from the grid's seed 0
    fid: bool = True
    kid: bool = True
    inception_score: bool = True
    lpips_diversity: bool = True
    clip_score: bool = True            # only for class- or text-conditioned models
    condition_accuracy: bool = True    # class-conditional models: a classifier trained on the real data
    cond_mae: bool = True              # vector-conditional models: a regressor trained on the real data
    broken_rate: bool = True           # share of solid / saturated / speckled samples (no pretrained network)
    broken_split: str = "val"          # real images the broken-sample thresholds come from: train | val
    classifier_epochs: int = 5
    regressor: str | None = None       # cond_mae: a `model=regressor` checkpoint (None = train one here and cache it)
    reference: dict[str, Any] = field(default_factory=lambda: {"split": "train", "n": 10000})
    kid_subsets: int = 100
    kid_subset_size: int = 1000        # capped at the sample counts; the size used is recorded
    isc_splits: int = 10
    feature_batch_size: int = 100      # images per Inception / LPIPS / CLIP forward
    cache_dir: str = "data/metric_stats"
    download: bool = True              # False: never download (downloads also need DIFFLAB_ALLOW_DOWNLOAD=1)
    weights: dict[str, Any] = field(default_factory=lambda: {
        "inception": None, "lpips_alexnet": None, "clip": "openai/clip-vit-base-patch16"})
    nll: dict[str, Any] = field(default_factory=dict)  # evaluate.py: bits/dim of real data (see NLL_DEFAULTS)
    also_sample: dict[str, Any] = field(default_factory=dict)  # training: label -> sampler fields, scored at the end too
    plugins: dict[str, bool] = field(default_factory=dict)  # registered metrics (difflab.metrics.registry): name -> on

    def __post_init__(self) -> None:
        if self.n_samples < 0 or self.batch_size < 1 or self.every_n_steps < 0:
            raise ValueError("metrics.n_samples >= 0, metrics.batch_size >= 1 and metrics.every_n_steps >= 0 are required")
        if self.broken_split not in ("train", "val"):
            raise ConfigError.bad_value("metrics.broken_split", f"{self.broken_split!r} is not a split", "Use train or val.")
        self.reference = {"split": "train", "n": 10000, **dict(self.reference or {})}
        self.weights = {"inception": None, "lpips_alexnet": None, "clip": "openai/clip-vit-base-patch16",
                        **dict(self.weights or {})}
        unknown = set(self.nll or {}) - set(NLL_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} under `metrics.nll`; known: {sorted(NLL_DEFAULTS)}")
        self.nll = {**NLL_DEFAULTS, **dict(self.nll or {})}
        known = {m.name for m in registry.plugins()}
        for name in self.plugins or {}:
            if name not in known:
                raise ConfigError.bad_value(f"metrics.plugins.{name}", f"no registered metric is named {name!r}",
                                            f"Registered metrics with a build factory: {sorted(known) or 'none'}.")
        self.plugins = {name: bool(on) for name, on in (self.plugins or {}).items()}

    @property
    def enabled(self) -> bool:
        return self.n_samples > 0


@dataclass
class Networks:
    """Factories for the pretrained networks; tests inject tiny random ones."""

    inception: Callable[[], FeatureExtractor] | None = None
    lpips: Callable[[], tuple[nn.Module, str]] | None = None
    clip: Callable[[], tuple[Any, Any]] | None = None


class MetricSuite:
    """Builds the configured metrics; `update` with samples, `compute` on every rank, `reset` between passes."""

    def __init__(self, config: MetricsConfig, device: torch.device | str = "cpu", checks: Collection[str] = (),
                 networks: Networks | None = None, strict: bool = False) -> None:
        """`checks`: the condition metrics that apply to the model (its `condition.checks`: condition_accuracy,
        cond_mae, clip_score); each still needs its switch in `config`."""
        self.config, self.device, self.strict = config, torch.device(device), strict
        nets = networks or Networks()
        c = config
        self.skipped: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}  # value key -> why it cannot be computed (recorded as null)
        self.weights_hash: dict[str, str] = {}
        self.features: FeatureStore | None = None
        self.lpips: LPIPSDiversity | None = None
        self.clip: CLIPScoreMetric | None = None
        self.reference: ReferenceStats | None = None
        self.accuracy: ConditionAccuracy | None = None
        self.classifier_val_accuracy: float | None = None
        self.mae: ConditionMAE | None = None
        self.regressor_val_mae_std: float | None = None
        self.broken: BrokenRate | None = None
        self.plugins = {m.name: m.build(config, self.device) for m in registry.plugins() if config.plugins.get(m.name)}
        self._want_accuracy = bool(c.condition_accuracy and "condition_accuracy" in checks)
        self._want_mae = bool(c.cond_mae and "cond_mae" in checks)
        wanted = [m for m in FIDELITY if getattr(c, m)]
        if wanted:
            extractor = self._build(wanted, nets.inception or (lambda: InceptionFeatures(c.weights["inception"], c.download)))
            if extractor is not None:
                self.features = FeatureStore(extractor).to(self.device)
                self.weights_hash["inception"] = extractor.weights_hash
                no_classifier = getattr(extractor, "no_classifier", None)
                if c.inception_score and no_classifier:
                    self.unavailable["is"] = no_classifier
                    log.warning("Inception Score not computed: %s.", no_classifier)
        if c.lpips_diversity:
            built = self._build(["lpips_diversity"], nets.lpips or (lambda: lpips_network(c.weights["lpips_alexnet"], c.download)))
            if built is not None:
                self.lpips = LPIPSDiversity(built[0]).to(self.device)
                self.weights_hash["lpips_alexnet"] = built[1]
        if c.clip_score and "clip_score" in checks:
            loader = self._build(["clip_score"], lambda: nets.clip or clip_model_loader(c.weights["clip"], c.download))
            if loader is not None:
                self.clip = CLIPScoreMetric(loader).to(self.device)
        if self.skipped:
            reasons = sorted(set(self.skipped.values()))
            log.warning("metrics skipped: %s. %s", ", ".join(self.skipped), " | ".join(reasons))

    def _build(self, names: list[str], factory: Callable[[], Any]) -> Any:
        try:
            return factory()
        except MetricWeightsError as err:
            if self.strict:
                raise
            self.skipped.update({n: str(err) for n in names})
            return None

    @property
    def active(self) -> list[str]:
        """Names of the metrics that will be computed."""
        names = [m for m in FIDELITY if getattr(self.config, m) and self.features is not None]
        names = [m for m in names if not (m == "inception_score" and "is" in self.unavailable)]
        names += [n for n, m in (("lpips_diversity", self.lpips), ("clip_score", self.clip)) if m is not None]
        return names + (["condition_accuracy"] if self._want_accuracy else []) + (
            ["cond_mae", "cond_mae_std"] if self._want_mae else []) + (["broken_rate"] if self.config.broken_rate else []) + [
            *self.plugins]

    @property
    def needs_reference(self) -> bool:
        return self.features is not None and (self.config.fid or self.config.kid)

    def reference_meta(self, dataset: str, resolution: int, count: int) -> dict[str, Any]:
        return {"dataset": dataset, "split": self.config.reference["split"], "resolution": int(resolution),
                "count": int(count), "weights_hash": self.weights_hash.get("inception", "none")}

    def _prepare_classifier(self, datamodule: Any) -> None:
        """The condition classifier / regressor: rank 0 loads or trains and caches it, the others then load it."""
        if self._want_accuracy and self.accuracy is None:
            model, self.classifier_val_accuracy = self._load_or_train(datamodule, "label")
            self.accuracy = ConditionAccuracy(model).to(self.device)
        if self._want_mae and self.mae is None:
            model, self.regressor_val_mae_std = self._load_or_train(datamodule, "cond")
            datamodule.setup("validate")  # cond_stats come with the splits (a given metrics.regressor built none)
            self.mae = ConditionMAE(model, datamodule.cond_stats).to(self.device)

    def _load_or_train(self, datamodule: Any, target: str) -> tuple[nn.Module, float]:
        if target == "cond" and self.config.regressor:  # a trained regressor checkpoint: every rank loads it
            model = load_regressor(self.config.regressor, key="metrics.regressor", device=self.device)
            return model, float(model.last_val.get("mae_std", float("nan")))
        rank, size = world()
        kwargs = {"epochs": self.config.classifier_epochs, "device": self.device, "target": target}
        if rank == 0:
            model, score, _ = load_or_train_classifier(datamodule, self.config.cache_dir, **kwargs)
        if size > 1:
            dist.barrier()
            if rank != 0:
                model, score, _ = load_or_train_classifier(datamodule, self.config.cache_dir, **kwargs)
        return model, score

    def prepare_reference(self, datamodule: Any) -> ReferenceStats | None:
        """Load the cached real-data statistics (and classifier), or compute them (sharded over ranks) and cache them."""
        self._prepare_classifier(datamodule)
        self._prepare_broken(datamodule)
        if not self.needs_reference or self.reference is not None:
            return self.reference
        split = self.config.reference["split"]
        available = len(datamodule.split_dataset(split))
        n = available if self.config.reference.get("n") in (None, "all") else min(int(self.config.reference["n"]), available)
        meta = self.reference_meta(datamodule.name, datamodule.resolution, n)
        path = reference_cache_path(self.config.cache_dir, meta)
        if self._on_every_rank(path.is_file()):  # one collective decision: no rank waits in a gather alone
            self.reference = ReferenceStats.load(path, meta)
            log.info("reference statistics: %s", path)
            return self.reference
        rank, size = world()
        log.info("computing reference Inception statistics of %s/%s (%d images) -> %s", datamodule.name, split, n, path)
        store = FeatureStore(self.features.extractor).to(self.device)
        part = shard(n, rank, size)
        progress = Progress("reference statistics", len(part), "images", enabled=rank == 0)
        for images, index in datamodule.iter_images(split, part.start, part.stop, self.config.feature_batch_size):
            store.update(images, index)
            progress.update(images.shape[0])
        progress.close()
        features, _ = store.compute()
        self.reference = ReferenceStats.from_features(features, meta)
        if rank == 0:
            self.reference.save(path)
        return self.reference

    def _prepare_broken(self, datamodule: Any) -> None:
        """The broken-sample thresholds from (at most 2,000) real images of `broken_split`; cheap, so every rank computes them."""
        if not self.config.broken_rate or self.broken is not None:
            return
        split = self.config.broken_split
        n = min(len(datamodule.split_dataset(split)), 2000)
        batches = (images for images, _ in datamodule.iter_images(split, 0, n, self.config.feature_batch_size))
        self.broken = BrokenRate(BrokenThresholds.from_images(batches, split)).to(self.device)

    def _on_every_rank(self, flag: bool) -> bool:
        """True when `flag` holds on every rank (e.g. a cache file visible on every node's disk)."""
        return bool(reduce_scalar(float(flag), dist.ReduceOp.MIN, self.device))

    def update(self, images: Tensor, index: Tensor, prompts: Sequence[str] | None = None,
               labels: Tensor | None = None, cond: Tensor | None = None) -> None:
        """Add generated images ([-1, 1], [N, C, H, W]) with their global sample indices (and prompts, labels,
        requested condition vectors [N, D] as the network saw them)."""
        step = self.config.feature_batch_size
        for start in range(0, images.shape[0], step):
            chunk = images[start : start + step].to(self.device)
            if self.features is not None:
                self.features.update(chunk, index[start : start + step])
            if self.lpips is not None:
                self.lpips.update(chunk, index[start : start + step])
            if self.clip is not None and prompts is not None:
                self.clip.update(chunk, prompts[start : start + step])
            if self.accuracy is not None and labels is not None:
                self.accuracy.update(chunk, labels[start : start + step])
            if self.mae is not None and cond is not None:
                self.mae.update(chunk, cond[start : start + step])
            if self.broken is not None:
                self.broken.update(chunk)
            for plugin in self.plugins.values():
                plugin.update(chunk, index[start : start + step])

    def compute(self) -> dict[str, float]:
        """All active metrics (collective: every rank must call it)."""
        out: dict[str, float] = {}
        c = self.config
        if self.features is not None:
            features, logits = self.features.compute()
            out.update(fidelity_scores(features, logits, self.reference, fid=c.fid, kid=c.kid,
                                       inception_score=c.inception_score and "is" not in self.unavailable,
                                       kid_subsets=c.kid_subsets,
                                       kid_subset_size=c.kid_subset_size, isc_splits=c.isc_splits))
        if self.lpips is not None:
            out["lpips_diversity"] = float(self.lpips.compute())
        if self.clip is not None and int(self.clip.count) > 0:
            out["clip_score"] = float(self.clip.compute())
        if self.accuracy is not None:
            out["condition_accuracy"] = float(self.accuracy.compute())
        if self.mae is not None:
            out.update(self.mae.compute())
        if self.broken is not None:
            out["broken_rate"] = float(self.broken.compute())
        for name, plugin in self.plugins.items():
            out[name] = float(plugin.compute())
        return out

    def reset(self) -> None:
        for metric in (self.features, self.lpips, self.clip, self.accuracy, self.mae, self.broken, *self.plugins.values()):
            if metric is not None:
                metric.reset()

    def protocol(self) -> dict[str, Any]:
        """What a number means: reference set, sizes, weights hashes, resizing; saved next to every value."""
        c = self.config
        ref = self.reference.meta if self.reference is not None else None
        return {
            "metrics": self.active, "skipped": dict(self.skipped), "unavailable": dict(self.unavailable), "reference": ref,
            "weights_hash": dict(self.weights_hash),
            "fid_protocol": "torch-fidelity: uint8 RGB, TF1 bilinear resize to 299, inception-2015-12-05 pool3 2048-d",
            "kid": {"subsets": c.kid_subsets, "subset_size": c.kid_subset_size, "kernel": "poly3"},
            "is_splits": c.isc_splits,
            "classifier_val_accuracy": self.classifier_val_accuracy,
            "regressor_val_mae_std": self.regressor_val_mae_std,
            "broken_thresholds": self.broken.thresholds.as_dict() if self.broken is not None else None,
            "lpips": "AlexNet, pairs (2k, 2k+1), inputs < 64 px upsampled to 64 (bilinear)",
            "config": asdict(c),
        }
