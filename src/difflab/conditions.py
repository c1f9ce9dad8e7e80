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
from torch import Tensor

from difflab.errors import ConfigError, IncompatibleCheckpointError

INPUT_KEYS = ("class_label", "cond", "cond_csv", "sweep", "regressor", "prompt", "negative_prompt", "prompts",
              "guidance_scale", "guidance_rescale")
GUIDANCE_KEYS = ("guidance_scale", "guidance_rescale")


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


class Vector(TensorCondition):
    """A vector of measured values per image from `batch["cond"]` (z-scored by the training split's `CondStats`);
    the null vector is a row of NaN (`VectorEmbedding`'s learned null embedding)."""

    kind, key, inputs = "vector", "cond", ("cond", "cond_csv", "sweep", "regressor")
    checks, guided = frozenset({"cond_mae"}), True

    def __init__(self, drop_prob: float = 0.1) -> None:
        super().__init__(drop_prob)
        self.stats: Any = None  # CondStats of the training split, from the data module or the checkpoint

    def describe(self) -> str:
        columns = f" on {self.stats.columns}" if self.stats is not None else ""
        return f"conditioned on a vector of values{columns}"


    def null(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, float("nan"))

    def draw(self, n: int, datamodule: Any = None, prompts: Sequence[str] | None = None) -> Requests:
        """Image i gets validation vector i mod N (real, jointly plausible values)."""
        from difflab.data.vectors import condition_rows

        if datamodule is None:
            raise ConfigError("A vector-conditioned model draws its conditions from the validation split: "
                              "pass data=<the data set it was trained on>.")
        rows = condition_rows(datamodule, "val")
        vectors = rows[torch.arange(n) % len(rows)]
        return Requests(vectors, None, vectors, None)

    def _require_stats(self) -> Any:
        if self.stats is None:
            raise IncompatibleCheckpointError("This vector-conditioned checkpoint holds no condition statistics "
                                              "(`cond_stats`): it was not trained on vector data. Use a checkpoint "
                                              "of `python train.py model=cond_vector data=...`.")
        return self.stats

    def parse(self, inputs: Mapping[str, Any], n: int) -> Requests:
        """`cond=` (one vector for all n images), `cond_csv=` (one per row) or `sweep=` (one column varied)."""
        self.refuse_foreign(inputs)
        stats = self._require_stats()
        if inputs.get("cond_csv") is not None and inputs.get("sweep") is not None:
            raise ConfigError("Config keys `cond_csv` and `sweep` both given: pass one vector per row of a CSV file "
                              "(cond_csv=...) or one column swept over a range (sweep=...), not both.")
        if inputs.get("cond_csv") is not None:
            return self._parse_table(inputs)
        if inputs.get("sweep") is not None:
            return self._parse_sweep(inputs)
        values = _mapping(inputs.get("cond"))
        example = ", ".join(f"{c}: {m:.3g}" for c, m in zip(stats.columns, stats.mean))
        if not isinstance(values, Mapping):
            raise ConfigError.bad_value("cond", f"this model is conditioned on {stats.columns} and needs one raw "
                                        f"value per column, got {inputs.get('cond')!r}",
                                        f"Pass cond='{{{example}}}' (raw units).")
        raw = stats.raw_vector(values, key="cond")
        return self.requests_of(raw.expand(n, -1))

    def _parse_table(self, inputs: Mapping[str, Any]) -> Requests:
        """`cond_csv=<file>`: one image per row, the columns named as in training (raw units)."""
        from pathlib import Path

        from difflab.data.csv_table import read_table

        if inputs.get("cond") is not None:
            raise ConfigError("Config keys `cond` and `cond_csv` both given: pass one vector for every image (cond=...) "
                              "or one per row of a CSV file (cond_csv=...), not both.")
        columns = self.stats.columns
        _, _, raw = read_table(Path(str(inputs["cond_csv"])).expanduser(), None, columns, key="cond_csv", min_rows=1,
                               exact=True)
        return self.requests_of(raw.float())

    def _parse_sweep(self, inputs: Mapping[str, Any]) -> Requests:
        """`sweep='{x3: [lo, hi, count]}'`: x3 at `count` values, the other columns at `cond=` (any of them) or the
        training mean, for `sweep_seeds` starting noises (`difflab.data.vectors.Sweep`)."""
        from difflab.data.vectors import parse_sweep

        held = _mapping(inputs.get("cond"))
        if held is not None and not isinstance(held, Mapping):
            raise ConfigError.bad_value("cond", f"{inputs.get('cond')!r} is not a mapping of columns to raw values",
                                        "With sweep=..., cond='{<column>: <value>, ...}' holds any of the other "
                                        "columns (the rest stay at the training mean).")
        sweep = parse_sweep(_mapping(inputs["sweep"]), self.stats, held, inputs.get("sweep_seeds", 1))
        requests = self.requests_of(sweep.raw(self.stats.columns))
        requests.sweep = sweep
        return requests

    def requests_of(self, raw: Tensor) -> Requests:
        """Requests of raw vectors [n, D] (encoded as the network saw its training data)."""
        vectors = self._require_stats().encode(raw)
        return Requests(vectors, None, vectors, None)

    def record(self, requests: Requests) -> dict[str, Any]:
        rows = self.rows(requests)
        sweep = {"sweep": requests.sweep.record(self.stats.columns)} if requests.sweep is not None else {}
        return {"cond": rows[0] if all(r == rows[0] for r in rows) else rows, **sweep}

    def rows(self, requests: Requests) -> list[dict[str, Any]]:
        raw = self._require_stats().decode(requests.vectors)  # the raw units the user asked in
        return [dict(zip(self.stats.columns, r)) for r in raw.tolist()]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "columns": None if self.stats is None else list(self.stats.columns)}

    def setup(self, datamodule: Any) -> None:
        stats = getattr(datamodule, "cond_stats", None)
        if stats is None:
            name = getattr(datamodule, "name", type(datamodule).__name__)
            raise ConfigError(f"A vector-conditioned model (model=cond_vector) needs data with a vector of values per "
                              f"image, and {name} has none: use data=shapes or data=csv data.csv=<file>.")
        self.stats = stats

    def state_dict(self) -> dict[str, Any]:
        return {} if self.stats is None else {"cond_stats": self.stats.to_dict()}

    def load_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        from difflab.data.vectors import CondStats

        if checkpoint.get("cond_stats"):
            self.stats = CondStats.from_dict(checkpoint["cond_stats"])


class TextPrompt(Condition):
    """Captions from `batch["caption"]`, encoded by a frozen text encoder the model attaches (`attach`); the
    null condition is the empty prompt's context, or the negative prompt's at sampling."""

    kind, key, inputs = "text", "caption", ("prompt", "negative_prompt", "prompts")
    checks, guided = frozenset({"clip_score"}), True

    def __init__(self, drop_prob: float = 0.1) -> None:
        super().__init__(drop_prob)
        self.encoder: Any = None
        self._empty: tuple[Any, Tensor] | None = None  # ((device, dtype), the empty prompt's context)

    def attach(self, encoder: Any) -> None:
        """The frozen text encoder (a module of the model, which moves it between devices)."""
        self.encoder = encoder

    def describe(self) -> str:
        return "text-conditioned"

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Context [B, L, D] of prompts (each distinct prompt encoded once)."""
        unique = list(dict.fromkeys(prompts))
        table = self.encoder(unique)
        return table[torch.tensor([unique.index(p) for p in prompts], device=table.device)]

    def from_batch(self, batch: Mapping[str, Any], training: bool, drop: Tensor | None = None) -> Tensor | None:
        captions = [str(c) for c in batch[self.key]]
        if training and self.drop_prob > 0:  # classifier-free guidance: the empty prompt
            uniform = torch.rand(len(captions)) if drop is None else drop.cpu()  # (B,)
            captions = ["" if d else c for c, d in zip(captions, uniform.lt(self.drop_prob).tolist())]
        return self.encode(captions)

    def null(self, cond: Tensor) -> Tensor:
        """The empty prompt's context (encoded once per device: the encoder is frozen)."""
        key = (cond.device, cond.dtype)
        if self._empty is None or self._empty[0] != key:
            self._empty = (key, self.encode([""]).to(cond))
        return self._empty[1].expand(cond.shape[0], -1, -1)

    def to_net(self, values: Any) -> Tensor | None:
        return None if values is None else self.encode(list(values))

    def draw(self, n: int, datamodule: Any = None, prompts: Sequence[str] | None = None) -> Requests:
        """Image i gets prompts[i mod len]; without prompts the empty prompt (the unconditional model)."""
        if not prompts:
            return Requests()
        texts = [prompts[i % len(prompts)] for i in range(n)]
        return Requests(texts, None, None, texts)

    def parse(self, inputs: Mapping[str, Any], n: int) -> Requests:
        self.refuse_foreign(inputs)
        prompt = inputs.get("prompt")
        if prompt is None:
            raise ConfigError("A text-conditioned model needs a prompt: pass prompt=\"...\" (config key `prompt`).")
        return self.draw(n, prompts=[str(prompt)])

    def record(self, requests: Requests) -> dict[str, Any]:
        texts = sorted(set(requests.texts or []))
        return {"prompt": texts[0] if len(texts) == 1 else texts}

    def rows(self, requests: Requests) -> list[dict[str, Any]]:
        return [{"prompt": p} for p in requests.texts or []]


def _mapping(value: Any) -> Any:
    """A command-line value as plain Python: a DictConfig/ListConfig as a container, a string such as
    '{x1: 0.3, x2: 1.2}' parsed as YAML (left as given when it does not parse)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

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
        return {"_target_": f"{__name__}.NoCondition"}
    if key == "label":
        embed = (model.get("net") or {}).get("cond_embed") or {}
        return {"_target_": f"{__name__}.ClassLabel", "num_classes": embed.get("num_classes", 10), "drop_prob": drop}
    if key == "cond":
        return {"_target_": f"{__name__}.Vector", "drop_prob": drop}
    if key == "caption":
        return {"_target_": f"{__name__}.TextPrompt", "drop_prob": drop}
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


__all__ = ["ClassLabel", "Condition", "NoCondition", "Requests", "TextPrompt", "Vector", "legacy_condition",
           "with_condition"]
