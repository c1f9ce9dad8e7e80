"""Class labels 0..K-1: the condition of class-conditional models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from difflab.conditions.base import Input, Requests, TensorCondition
from difflab.errors import ConfigError


class ClassLabel(TensorCondition):
    """Class labels 0..K-1 from `batch["label"]`; the null class is -1 (`ClassEmbedding`'s extra class)."""

    kind, key, inputs = "class_label", "label", ("class_label",)
    checks, guided = frozenset({"condition_accuracy", "clip_score"}), True

    def __init__(self, num_classes: int | None, drop_prob: float = 0.1) -> None:
        super().__init__(drop_prob)
        if num_classes is None or isinstance(num_classes, bool) or int(num_classes) < 1:
            raise ConfigError.bad_value("model.condition.num_classes", f"got {num_classes!r}; a class-conditional "
                                        "model needs labelled data", "Use data with classes (data=digits, "
                                        "data=mnist, data=cifar10, data=shapes) or set data.num_classes.")
        self.num_classes = int(num_classes)

    def describe(self) -> str:
        return f"class-conditional with {self.num_classes} classes"

    def widgets(self) -> list[Input]:
        return [Input("class_label", "choice", "Class", choices=tuple(range(self.num_classes)),
                      unset="cycle over the classes")]


    def null(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def _requests(self, labels: Tensor, class_names: Sequence[str] | None = None) -> Requests:
        names = list(class_names or [str(k) for k in range(self.num_classes)])
        return Requests(labels, labels, None, [f"a photo of a {names[int(k)]}" for k in labels])

    def draw(self, n: int, datamodule: Any = None, prompts: Sequence[str] | None = None) -> Requests:
        """Image i gets class i mod K (one row of a grid per class)."""
        return self._requests(torch.arange(n) % self.num_classes, getattr(datamodule, "class_names", None))

    def parse(self, inputs: Mapping[str, Any], n: int) -> Requests:
        self.refuse_foreign(inputs)
        label = inputs.get("class_label")
        if label is None:
            return self.draw(n)
        top = self.num_classes - 1
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= top:
            raise ConfigError.bad_value("class_label", f"{label!r} is not a class of this model, whose classes are "
                                        f"0..{top}", f"Pass class_label=<an integer 0..{top}>, or leave it out to "
                                        "cycle over the classes.")
        return self._requests(torch.full((n,), label, dtype=torch.int64))

    def record(self, requests: Requests) -> dict[str, Any]:
        labels = sorted(set(requests.labels.tolist())) if requests.labels is not None else []
        return {"class_label": labels[0] if len(labels) == 1 else labels}

    def rows(self, requests: Requests) -> list[dict[str, Any]]:
        return [{"class_label": k} for k in requests.labels.tolist()]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_classes": self.num_classes}

    def setup(self, datamodule: Any) -> None:
        classes = getattr(datamodule, "num_classes", None)
        if classes is not None and int(classes) != self.num_classes:
            raise ConfigError.bad_value("model.condition.num_classes", f"{self.num_classes}, but the data has "
                                        f"{classes} classes", f"Set model.condition.num_classes={classes}.")
