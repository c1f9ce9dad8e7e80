"""Condition checks: does a generated image show the class / the vector of values it was asked for?

`ConditionAccuracy` scores a classifier's readings of the generated images against their requested labels,
`ConditionMAE` a condition regressor's readings against the requested vectors; the networks come from
`difflab.evaluation.classifier` (trained on the real data and cached) or a `model=regressor` checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from difflab.errors import ConfigError
from difflab.metrics.inception import quantize
from difflab.metrics.regression import VectorErrors


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
        pred = self.classifier(quantize(images.to(self.device))).argmax(1)  # the 8-bit images
        self.correct += int((pred == labels.to(self.device)).sum())
        self.total += labels.numel()

    def compute(self) -> Tensor:
        if int(self.total) == 0:
            raise ValueError("condition accuracy needs at least one labelled image")
        return self.correct.double() / self.total


class ConditionMAE(VectorErrors):
    """Mean absolute error between requested vectors and the condition regressor's readings of the generated images,
    in raw units and in std units of the model's training split (summed across ranks)."""

    def __init__(self, regressor: nn.Module, stats: Any, **kwargs: Any) -> None:
        super().__init__(stats, **kwargs)
        if list(regressor.columns) != list(stats.columns):
            raise ConfigError.bad_value("metrics.regressor", f"the regressor reads the columns {regressor.columns}, and "
                                        f"the model is conditioned on {stats.columns}", "Use a regressor trained on "
                                        "the data of the model (python train.py model=regressor data=...).")
        self.regressor = regressor

    @torch.no_grad()
    def update(self, images: Tensor, cond: Tensor) -> None:  # type: ignore[override]
        """`cond`: the requested vectors as the network saw them (encoded by `stats`), [N, D]."""
        predicted = self.regressor.predict(quantize(images.to(self.device)))  # (N, D) raw, the 8-bit images
        super().update(predicted, self.stats.decode(cond.to(self.device)))

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        """{"cond_mae": mean over columns of the raw MAE, "cond_mae_std": the same in std units}."""
        if int(self.total) == 0:
            raise ValueError("the condition MAE needs at least one image with a requested vector")
        values = super().compute()
        return {"cond_mae": float(values["mae"].mean()), "cond_mae_std": float(values["mae_std"].mean())}
