"""Condition checks: does a generated image show the class / the vector of values it was asked for?

A small CNN is trained by difflab on the real training split of the data set (no augmentation,
fixed seed), cached per data set, resolution and seed next to the reference statistics, and
reports its own held-out score, the ceiling for the generated images' score:

- target "label" (class-conditional models): a classifier; `ConditionAccuracy`, its val accuracy.
- target "cond" (vector-conditional models): a regressor of the z-scored vector (with coordinate
  input channels, since centres and positions matter); `ConditionMAE`, the mean absolute error
  between requested and predicted vectors in raw units and in std units of the training split;
  the cache name also carries a hash of the columns and their statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from difflab.utils.checkpoint_files import atomic_save

log = logging.getLogger(__name__)

MIN_STEPS = 300


class SmallClassifier(nn.Module):
    """Three strided conv layers, global average pooling and a linear head; inputs in [-1, 1].

    With `coords`, two channels holding the pixel coordinates in [-1, 1] are appended to the input
    (CoordConv), so that pooled features can encode where things are (needed to regress positions)."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, coords: bool = False) -> None:
        super().__init__()
        self.coords = coords
        self.net = nn.Sequential(
            nn.Conv2d(channels + 2 * coords, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.coords:
            t = torch.linspace(-1, 1, x.shape[-1], device=x.device, dtype=x.dtype)
            v, u = torch.meshgrid(torch.linspace(-1, 1, x.shape[-2], device=x.device, dtype=x.dtype), t, indexing="ij")
            x = torch.cat([x, u.expand(x.shape[0], 1, -1, -1), v.expand(x.shape[0], 1, -1, -1)], dim=1)
        return self.net(x)


class LabelTarget:
    """Target "label" (class-conditional models): a classifier scored by its accuracy."""

    key, what, score_key = "label", "condition-accuracy classifier", "val_accuracy"

    def model(self, datamodule: Any) -> SmallClassifier:
        """The untrained network: num_classes logits."""
        if not datamodule.num_classes:
            raise ValueError(f"condition accuracy needs a labelled data set; {datamodule.name} has no classes")
        return SmallClassifier(datamodule.channels, int(datamodule.num_classes))

    def targets(self, datamodule: Any, y: Tensor) -> Tensor:
        return y

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    def score(self, out: Tensor, y: Tensor) -> float:
        return float((out.argmax(1) == y).double().mean())

    def cache_name(self, datamodule: Any) -> str:
        return "classifier"


class VectorTarget:
    """Target "cond" (vector-conditional models): a regressor of the z-scored vector, scored by its MAE in std units."""

    key, what, score_key = "cond", "condition regressor", "val_mae_std"

    def model(self, datamodule: Any) -> SmallClassifier:
        """The untrained network: cond_dim regressed z-scores, with coordinate channels."""
        datamodule.setup("validate")
        if getattr(datamodule, "cond_stats", None) is None:
            raise ValueError(f"the condition MAE needs a data set with condition vectors; {datamodule.name} has none")
        return SmallClassifier(datamodule.channels, datamodule.cond_stats.dim, coords=True)

    def targets(self, datamodule: Any, y: Tensor) -> Tensor:
        return datamodule.cond_stats.zscore(datamodule.cond_stats.decode(y))

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.smooth_l1_loss(out, y, beta=0.1)

    def score(self, out: Tensor, y: Tensor) -> float:
        return float((out - y).abs().double().mean())

    def cache_name(self, datamodule: Any) -> str:
        stats = json.dumps(datamodule.cond_stats.to_dict(), sort_keys=True)
        return f"regressor-{hashlib.sha256(stats.encode()).hexdigest()[:10]}"


TARGETS = {t.key: t for t in (LabelTarget(), VectorTarget())}  # by the batch key of the condition checked


def _target(target: str) -> LabelTarget | VectorTarget:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    return TARGETS[target]


def _split_tensors(datamodule: Any, split: str, target: str = "label") -> tuple[Tensor, Tensor]:
    """All images and targets of a split, in memory (labels, or the vectors as z-scores of the training split)."""
    batches = [b for b, _ in datamodule.iter_batches(split, 0, len(datamodule.split_dataset(split)), 256)]
    y = _target(target).targets(datamodule, torch.cat([b[target] for b in batches]))
    return torch.cat([b["image"] for b in batches]), y


def train_classifier(datamodule: Any, *, epochs: int = 5, seed: int = 0, device: torch.device | str = "cpu",
                     batch_size: int = 128, target: str = "label") -> tuple[SmallClassifier, float]:
    """Train on the real train split; returns (network in eval mode, its val accuracy or val MAE in std units)."""
    kind = _target(target)
    model = kind.model(datamodule).to(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = _split_tensors(datamodule, "train", target)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = max(epochs * max(1, len(x) // batch_size), MIN_STEPS)  # small data sets still get a usable classifier
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = kind.loss(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    xv, yv = _split_tensors(datamodule, "val", target)
    with torch.no_grad():
        score = kind.score(model(xv.to(device)).cpu(), yv)
    return model, score


def cache_path(datamodule: Any, cache_dir: str | Path, *, epochs: int, seed: int, target: str) -> Path:
    """<data>-<res>px-classifier-e<epochs>-s<seed>.pt, or ...-regressor-<hash of columns and statistics>-..."""
    name = _target(target).cache_name(datamodule)
    return Path(cache_dir) / f"{datamodule.name}-{datamodule.resolution}px-{name}-e{epochs}-s{seed}.pt"


def load_or_train_classifier(datamodule: Any, cache_dir: str | Path, *, epochs: int = 5, seed: int = 0,
                             device: torch.device | str = "cpu", target: str = "label") -> tuple[SmallClassifier, float, Path]:
    """The cached classifier (target "label") or regressor ("cond") of this data set, trained and cached on a
    miss; returns (model, val accuracy or val MAE in std units, path)."""
    kind = _target(target)
    model = kind.model(datamodule)
    path = cache_path(datamodule, cache_dir, epochs=epochs, seed=seed, target=target)
    key, what = kind.score_key, kind.what
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        return model.to(device).eval(), float(blob[key]), path
    log.info("training the %s of %s (%d epochs) -> %s", what, datamodule.name, epochs, path)
    model, score = train_classifier(datamodule, epochs=epochs, seed=seed, device=device, target=target)
    atomic_save({"state_dict": model.state_dict(), key: score}, path)
    log.info("%s: %s %.4g on the real %s val split", what, key, score, datamodule.name)
    return model, score, path


class ConditionAccuracy(Metric):
    """Fraction of generated images that the classifier assigns to their requested label (summed across ranks)."""

    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier
        self.add_state("correct", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: Tensor, labels: Tensor) -> None:  # type: ignore[override]
        from difflab.metrics.inception import quantize

        pred = self.classifier(quantize(images.to(self.device))).argmax(1)  # the 8-bit images
        self.correct += int((pred == labels.to(self.device)).sum())
        self.total += labels.numel()

    def compute(self) -> Tensor:
        if int(self.total) == 0:
            raise ValueError("condition accuracy needs at least one labelled image")
        return self.correct.double() / self.total


class ConditionMAE(Metric):
    """Mean absolute error between requested vectors and the regressor's predictions for the generated images,
    in raw units and in std units of the training split (summed across ranks)."""

    full_state_update = False

    def __init__(self, regressor: nn.Module, stats: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.regressor, self.stats = regressor, stats
        self.add_state("abs_raw", default=torch.zeros(stats.dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("abs_std", default=torch.zeros(stats.dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: Tensor, cond: Tensor) -> None:  # type: ignore[override]
        """`cond`: the requested vectors as the network saw them (encoded by `stats`), [N, D]."""
        from difflab.metrics.inception import quantize

        z_pred = self.regressor(quantize(images.to(self.device))).float()  # (N, D) z-scores
        z_req = self.stats.zscore(self.stats.decode(cond.to(self.device)))  # (N, D)
        diff_std = (z_pred - z_req).abs().double()
        self.abs_std += diff_std.sum(0)
        self.abs_raw += (diff_std * torch.tensor(self.stats.std, dtype=torch.float64, device=self.device)).sum(0)
        self.total += cond.shape[0]

    def compute(self) -> dict[str, float]:
        if int(self.total) == 0:
            raise ValueError("the condition MAE needs at least one image with a requested vector")
        n = float(self.total) * self.stats.dim
        return {"cond_mae": float(self.abs_raw.sum()) / n, "cond_mae_std": float(self.abs_std.sum()) / n}
