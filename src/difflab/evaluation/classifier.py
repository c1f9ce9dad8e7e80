"""The networks of the condition checks (`difflab.metrics.conditions`), trained on real data and cached.

Does a generated image show the class / the vector of values it was asked for? A small CNN (`difflab.nets.SmallCNN`) reads the images and reports its own held-out score, the ceiling for the
generated images' score:

- target "label" (class-conditional models): a classifier trained by difflab on the real training split (no
  augmentation, fixed seed), cached per data set, resolution and seed next to the reference statistics;
  `ConditionAccuracy`, its val accuracy.
- target "cond" (vector-conditional models): the condition regressor (`difflab.lit.regressor.RegressorModule`,
  the model `python train.py model=regressor` trains), either loaded from its checkpoint (`metrics.regressor`)
  or trained here the same way as the classifier and cached (the name carries a hash of the columns and their
  statistics); `ConditionMAE`, the mean absolute error between requested and predicted vectors in raw units and
  in std units of the training split.
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

from difflab.lit.regressor import default_regressor, regression_loss
from difflab.nets.cnn import SmallCNN
from difflab.utils.checkpoint_files import atomic_save

log = logging.getLogger(__name__)

MIN_STEPS = 300


class LabelTarget:
    """Target "label" (class-conditional models): a classifier scored by its accuracy."""

    key, what, score_key = "label", "condition-accuracy classifier", "val_accuracy"

    def model(self, datamodule: Any) -> SmallCNN:
        """The untrained network: num_classes logits."""
        if not datamodule.num_classes:
            raise ValueError(f"condition accuracy needs a labelled data set; {datamodule.name} has no classes")
        return SmallCNN(datamodule.channels, int(datamodule.num_classes))

    def targets(self, datamodule: Any, y: Tensor) -> Tensor:
        return y

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    def score(self, out: Tensor, y: Tensor) -> float:
        return float((out.argmax(1) == y).double().mean())

    def cache_name(self, datamodule: Any) -> str:
        return "classifier"

    def network(self, model: nn.Module) -> nn.Module:
        """The part whose weights are cached."""
        return model


class VectorTarget:
    """Target "cond" (vector-conditional models): the condition regressor of the z-scored vector, scored by its MAE
    in std units."""

    key, what, score_key = "cond", "condition regressor", "val_mae_std"

    def model(self, datamodule: Any) -> nn.Module:
        """The untrained regressor (`model=regressor`'s network), fitted to the data's statistics."""
        return default_regressor(datamodule)

    def targets(self, datamodule: Any, y: Tensor) -> Tensor:
        return datamodule.cond_stats.zscore(datamodule.cond_stats.decode(y))

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return regression_loss(out, y)

    def score(self, out: Tensor, y: Tensor) -> float:
        return float((out - y).abs().double().mean())

    def cache_name(self, datamodule: Any) -> str:
        stats = json.dumps(datamodule.cond_stats.to_dict(), sort_keys=True)
        return f"regressor-{hashlib.sha256(stats.encode()).hexdigest()[:10]}"

    def network(self, model: nn.Module) -> nn.Module:
        """The regressor's SmallCNN (its statistics come from the data; cache name and keys as before)."""
        return model.net


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
                     batch_size: int = 128, target: str = "label") -> tuple[nn.Module, float]:
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
                             device: torch.device | str = "cpu", target: str = "label") -> tuple[nn.Module, float, Path]:
    """The cached classifier (target "label") or regressor ("cond") of this data set, trained and cached on a
    miss; returns (model, val accuracy or val MAE in std units, path)."""
    kind = _target(target)
    model = kind.model(datamodule)
    path = cache_path(datamodule, cache_dir, epochs=epochs, seed=seed, target=target)
    key, what = kind.score_key, kind.what
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        kind.network(model).load_state_dict(blob["state_dict"])
        return model.to(device).eval(), float(blob[key]), path
    log.info("training the %s of %s (%d epochs) -> %s", what, datamodule.name, epochs, path)
    model, score = train_classifier(datamodule, epochs=epochs, seed=seed, device=device, target=target)
    atomic_save({"state_dict": kind.network(model).state_dict(), key: score}, path)
    log.info("%s: %s %.4g on the real %s val split", what, key, score, datamodule.name)
    return model, score, path
