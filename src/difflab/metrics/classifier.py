"""Condition accuracy: does a generated image show the class it was asked for?

A small CNN is trained by difflab on the real training split of the data set (no augmentation,
fixed seed), cached per data set, resolution and seed next to the reference statistics, and
reports its own held-out accuracy, the ceiling for the generated images' score.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

log = logging.getLogger(__name__)

MIN_STEPS = 300


class SmallClassifier(nn.Module):
    """Three strided conv layers, global average pooling and a linear head; inputs in [-1, 1]."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _split_tensors(datamodule: Any, split: str) -> tuple[Tensor, Tensor]:
    """All images and labels of a split, in memory (the classifier's data sets are small or cached once)."""
    batches = [b for b, _ in datamodule.iter_batches(split, 0, len(datamodule.split_dataset(split)), 256)]
    return torch.cat([b["image"] for b in batches]), torch.cat([b["label"] for b in batches])


def train_classifier(datamodule: Any, *, epochs: int = 5, seed: int = 0, device: torch.device | str = "cpu",
                     batch_size: int = 128) -> tuple[SmallClassifier, float]:
    """Train on the real train split; returns (classifier in eval mode, its accuracy on the val split)."""
    if not datamodule.num_classes:
        raise ValueError(f"condition accuracy needs a labelled data set; {datamodule.name} has no classes")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = _split_tensors(datamodule, "train")
    model = SmallClassifier(datamodule.channels, int(datamodule.num_classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = max(epochs * max(1, len(x) // batch_size), MIN_STEPS)  # small data sets still get a usable classifier
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    xv, yv = _split_tensors(datamodule, "val")
    with torch.no_grad():
        acc = float((model(xv.to(device)).argmax(1).cpu() == yv).double().mean())
    return model, acc


def load_or_train_classifier(datamodule: Any, cache_dir: str | Path, *, epochs: int = 5, seed: int = 0,
                             device: torch.device | str = "cpu") -> tuple[SmallClassifier, float, Path]:
    """The cached classifier of this data set (trained and cached on a miss); returns (model, val accuracy, path)."""
    path = Path(cache_dir) / f"{datamodule.name}-{datamodule.resolution}px-classifier-e{epochs}-s{seed}.pt"
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = SmallClassifier(datamodule.channels, int(datamodule.num_classes))
        model.load_state_dict(blob["state_dict"])
        return model.to(device).eval(), float(blob["val_accuracy"]), path
    log.info("training the condition-accuracy classifier of %s (%d epochs) -> %s", datamodule.name, epochs, path)
    model, acc = train_classifier(datamodule, epochs=epochs, seed=seed, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": model.state_dict(), "val_accuracy": acc}, tmp)
    tmp.replace(path)
    log.info("condition-accuracy classifier: %.1f%% on the real %s val split", 100 * acc, datamodule.name)
    return model, acc, path


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
