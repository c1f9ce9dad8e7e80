"""Text prompts encoded by a frozen text encoder: the condition of text-to-image models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from difflab.conditions.base import Condition, Input, Requests
from difflab.errors import ConfigError


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

    def widgets(self) -> list[Input]:
        return [Input("prompt", "text", "Prompt ((word:1.4) weights a word)", value=""),
                Input("negative_prompt", "text", "Negative prompt")]

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
