"""What a diffusion model is conditioned on, as one typed object per kind: none, class label, vector, text.

A model owns its condition (`model.condition` in its config, e.g.
`{_target_: difflab.conditions.ClassLabel, num_classes: ${data.num_classes}, drop_prob: 0.1}`), and every
caller asks it instead of testing the kind:

- `key`, `from_batch`: the batch entry it reads in training, with condition dropout to the null condition
  (probability `drop_prob`, classifier-free guidance, Ho & Salimans 2022);
- `null`: the null condition of guidance's unconditional branch;
- `draw(n, datamodule)`: the conditions of images 0..n-1 for in-training grids and metrics
  (class i mod K; validation vector i mod N; prompt i mod len);
- `parse(inputs, n)`: the command line (`class_label=`, `cond=`, `cond_csv=`, `sweep=`, `prompt=`/
  `negative_prompt=`), with a clear error for an input that means nothing for this model;
- `record(requests)`, `rows(requests)`: what samples.json writes about it, and one row per image (the
  `conditions.csv` next to the images);
- `state_dict` / `load_state_dict`: its state (the z-score statistics of vectors), saved in checkpoints.

A `Requests` holds the conditions of a set of images: `values` (what `to_net` turns into the network's
input) and what the condition metrics check (`labels`, `vectors`, CLIP `texts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from difflab.errors import ConfigError, IncompatibleCheckpointError

INPUT_KEYS = ("class_label", "cond", "cond_csv", "sweep", "regressor", "prompt", "negative_prompt", "prompts",
              "guidance_scale", "guidance_rescale")
GUIDANCE_KEYS = ("guidance_scale", "guidance_rescale")


@dataclass(frozen=True)
class Input:
    """One input a condition kind takes, declared for front ends (the studio builds its widgets from these).

    `key` is the sample.py / `DiffusionModel.sample` keyword it fills: a `choice` input gives one of `choices` (or
    nothing: the model's default), a `number` input one value in [low, high] of a vector's `column` (all of them
    together make `cond={column: value}`), a `text` input a string."""

    key: str
    kind: str                               # "choice" | "number" | "text"
    label: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    value: Any = None
    step: float | None = None
    column: str | None = None
    unset: str = "the model's default"      # a choice input's entry for giving nothing


@dataclass
class Requests:
    """The conditions of images 0..n-1 (or a slice of them): network values and what condition metrics check."""

    values: Tensor | list[str] | None = None  # labels [n] int64, encoded vectors [n, D], or prompts
    labels: Tensor | None = None              # condition accuracy: the requested classes [n]
    vectors: Tensor | None = None             # condition MAE: the requested vectors as the network sees them [n, D]
    texts: list[str] | None = None            # CLIP score: the text each image should show
    sweep: Any = None                         # a `difflab.data.vectors.Sweep`: images laid out noise x value

    def __len__(self) -> int:
        return 0 if self.values is None else len(self.values)

    def __getitem__(self, index: Tensor) -> Requests:
        """The requests of images `index` (global indices into 0..n-1)."""
        rows = index.tolist()

        def pick(v: Tensor | list[str] | None) -> Any:
            if v is None:
                return None
            return v[index] if isinstance(v, Tensor) else [v[i] for i in rows]

        return Requests(pick(self.values), pick(self.labels), pick(self.vectors), pick(self.texts))


def _check_drop(drop_prob: float) -> float:
    if not 0.0 <= float(drop_prob) < 1.0:
        raise ConfigError.bad_value("model.condition.drop_prob", f"must be in [0, 1), got {drop_prob}",
                                    "0.1 is the usual value for classifier-free guidance; 0 turns dropout off.")
    return float(drop_prob)


class Condition:
    """No condition: an unconditional model. The base of every kind (see the module docstring)."""

    kind = "none"
    key: str | None = None                   # the batch entry read in training
    inputs: tuple[str, ...] = ()             # command-line keys that mean something for this kind
    checks: frozenset[str] = frozenset()     # condition metrics that apply
    guided = False                           # whether classifier-free guidance applies

    def __init__(self, drop_prob: float = 0.0) -> None:
        self.drop_prob = _check_drop(drop_prob)

    def describe(self) -> str:
        """How a message names this model's condition."""
        return "unconditional"

    def widgets(self) -> list[Input]:
        """The inputs a front end offers for this kind (none for an unconditional model)."""
        return []

    def from_batch(self, batch: Mapping[str, Any], training: bool, drop: Tensor | None = None) -> Tensor | None:
        """The network's condition of a training/validation batch, dropped to the null condition in training."""
        return None

    def null(self, cond: Tensor) -> Tensor:
        """The null condition of guidance's unconditional branch, batch-matched to `cond`."""
        raise NotImplementedError(f"a {self.kind} condition has no null condition")

    def to_net(self, values: Any) -> Tensor | None:
        """Requested values -> the network's condition."""
        return None

    def draw(self, n: int, datamodule: Any = None, prompts: Sequence[str] | None = None) -> Requests:
        """The conditions of images 0..n-1 for grids and metrics."""
        return Requests()

    def parse(self, inputs: Mapping[str, Any], n: int) -> Requests:
        """The command-line inputs as the conditions of n images; inputs that mean nothing here are errors."""
        self.refuse_foreign(inputs)
        return Requests()

    def refuse_foreign(self, inputs: Mapping[str, Any]) -> None:
        """A ConfigError for the first input key this kind of model does not take."""
        accepted = set(self.inputs) | (set(GUIDANCE_KEYS) if self.guided else set())
        for key in INPUT_KEYS:
            if inputs.get(key) is not None and key not in accepted:
                takes = ", ".join(f"{k}=" for k in self.inputs) or "no condition"
                raise ConfigError(f"Config key `{key}` means nothing for this model: it is {self.describe()} and "
                                  f"takes {takes}. Remove {key}=... from the command line (or use a model trained "
                                  "with that condition).")

    def record(self, requests: Requests) -> dict[str, Any]:
        """What samples.json records about the requested conditions."""
        return {}

    def rows(self, requests: Requests) -> list[dict[str, Any]]:
        """The requested condition of each image, one {name: value} row per image (none for an unconditional model)."""
        return []

    def config(self) -> dict[str, Any]:
        """What metrics.json records about the condition itself."""
        return {"kind": self.kind, "drop_prob": self.drop_prob}

    def setup(self, datamodule: Any) -> None:
        """Take what the condition needs from the training data (vector statistics); check they fit."""

    def state_dict(self) -> dict[str, Any]:
        """Entries this condition adds to a checkpoint."""
        return {}

    def load_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        """Restore the condition's state from a checkpoint's entries."""


class NoCondition(Condition):
    """An unconditional model (the default of `model.condition`)."""


class TensorCondition(Condition):
    """A condition the batch already holds as the network's input tensor (labels, vectors)."""

    def from_batch(self, batch: Mapping[str, Any], training: bool, drop: Tensor | None = None) -> Tensor | None:
        """`batch[key]`, rows replaced by the null condition where the uniform draw `drop` [B] < `drop_prob`."""
        cond = batch[self.key]
        if not (training and self.drop_prob > 0):
            return cond
        uniform = torch.rand(cond.shape[0], device=cond.device) if drop is None else drop.to(cond.device)  # (B,)
        return torch.where((uniform < self.drop_prob).reshape(-1, *([1] * (cond.ndim - 1))), self.null(cond), cond)

    def to_net(self, values: Any) -> Tensor | None:
        return values


def _mapping(value: Any) -> Any:
    """A command-line value as plain Python: a DictConfig/ListConfig as a container, a string such as
    '{x1: 0.3, x2: 1.2}' parsed as YAML (left as given when it does not parse)."""
    if isinstance(value, str):
        try:
            value = OmegaConf.create(value)
        except Exception:
            return value
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def legacy_condition(model: Mapping[str, Any]) -> dict[str, Any]:
    """`model.condition` of a config written before conditions were objects (`cond_key`, `cond_drop_prob`)."""
    key, drop = model.get("cond_key"), float(model.get("cond_drop_prob") or 0.0)
    if key is None:
        return {"_target_": "difflab.conditions.NoCondition"}
    if key == "label":
        embed = (model.get("net") or {}).get("cond_embed") or {}
        return {"_target_": "difflab.conditions.ClassLabel", "num_classes": embed.get("num_classes", 10), "drop_prob": drop}
    if key == "cond":
        return {"_target_": "difflab.conditions.Vector", "drop_prob": drop}
    if key == "caption":
        return {"_target_": "difflab.conditions.TextPrompt", "drop_prob": drop}
    raise IncompatibleCheckpointError(f"The checkpoint's model is conditioned on the unknown batch key {key!r} "
                                      "(model.cond_key); it was not written by difflab.")


def with_condition(model: Mapping[str, Any]) -> dict[str, Any]:
    """A saved model config with `condition` in place of the old `cond_key` / `cond_drop_prob` keys."""
    model = dict(model)
    if "cond_key" in model or "cond_drop_prob" in model:
        model["condition"] = legacy_condition(model)
        model.pop("cond_key", None)
        model.pop("cond_drop_prob", None)
    return model
