"""Text prompts encoded by a frozen text encoder: the condition of text-to-image models.

Prompts use the web UI's prompt language (`difflab.nets.prompts`: weights, [from:to:when], [a|b], BREAK); a
malformed one is refused when the prompts are read (`parse`, `draw`), naming its config key. CLIP score checks each
image against the prompt's plain text at its last step (`plain_text`), the record keeps the prompt as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from difflab.conditions.base import Condition, Input, Requests
from difflab.data.image_text import ImageTextDataModule
from difflab.diffusion.conditioning import repeat_rows, zeros_like_cond
from difflab.errors import ConfigError
from difflab.nets.prompts import PromptSyntaxError, parse_prompt, plain_text


class TextPrompt(Condition):
    """Captions from `batch["caption"]`, encoded by a frozen text encoder the model attaches (`attach`); the
    null condition is the empty prompt's context, or the negative prompt's at sampling."""

    kind, key, inputs = "text", "caption", ("prompt", "negative_prompt", "prompts")
    checks, guided = frozenset({"clip_score"}), True

    def __init__(self, drop_prob: float = 0.1, caption: str | None = None) -> None:
        super().__init__(drop_prob)
        self.caption = caption  # the caption of every training image when the data has none (data=image_folder)
        self.encoder: Any = None
        self._empty: tuple[Any, Any] | None = None  # (device, the empty prompt's condition)

    def attach(self, encoder: Any) -> None:
        """The frozen text encoder (a module of the model, which moves it between devices)."""
        self.encoder = encoder

    def describe(self) -> str:
        return "text-conditioned"

    def widgets(self) -> list[Input]:
        return [Input("prompt", "text", "Prompt ((word:1.4) weights a word)", value=""),
                Input("negative_prompt", "text", "Negative prompt")]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Any:
        """The condition of prompts (each distinct prompt encoded once): context [B, L, D], a `TextCond` (SDXL,
        prompts of different lengths) or a `PromptSchedule` (prompt editing); see `difflab.nets.text`."""
        unique = list(dict.fromkeys(prompts))
        table = self.encoder(unique)
        return table[torch.tensor([unique.index(p) for p in prompts], device=table.device)]

    def setup(self, datamodule: Any) -> None:
        """Training data without captions needs `caption`, data with captions refuses one (before the first step)."""
        captioned = isinstance(datamodule, ImageTextDataModule)
        if not captioned and self.caption is None:
            raise _no_captions()
        if captioned and self.caption is not None:
            raise ConfigError.bad_value("caption", f"{self.caption!r}, but data=image_text brings a caption per image",
                                        "Remove caption=... (it captions data without captions, e.g. data=image_folder).")

    def from_batch(self, batch: Mapping[str, Any], training: bool, drop: Tensor | None = None) -> Tensor | None:
        if self.key not in batch and self.caption is None:
            raise _no_captions()
        captions = [str(c) for c in batch[self.key]] if self.key in batch else [str(self.caption)] * _rows(batch)
        if training and self.drop_prob > 0:  # classifier-free guidance: the empty prompt
            uniform = torch.rand(len(captions)) if drop is None else drop.cpu()  # (B,)
            captions = ["" if d else c for c, d in zip(captions, uniform.lt(self.drop_prob).tolist())]
        return self.encode(captions)

    def null(self, cond: Any) -> Any:
        """The empty prompt's condition (encoded once per device: the encoder is frozen); all zeros for an encoder
        with `zero_null` (SDXL's `force_zeros_for_empty_prompt`), its size ids kept."""
        if getattr(self.encoder, "zero_null", False):
            return zeros_like_cond(cond)
        if self._empty is None or self._empty[0] != cond.device:
            self._empty = (cond.device, self.encode([""]).to(device=cond.device))
        empty = self._empty[1]
        if isinstance(empty, Tensor) and isinstance(cond, Tensor):
            empty = empty.to(cond.dtype)
        return repeat_rows(empty, len(cond))

    def to_net(self, values: Any) -> Any:
        return None if values is None else self.encode(list(values))

    def draw(self, n: int, datamodule: Any = None, prompts: Sequence[str] | None = None, key: str = "prompts") -> Requests:
        """Image i gets prompts[i mod len]; without prompts the empty prompt (the unconditional model). A prompt
        whose editing syntax is malformed is a ConfigError naming `key`."""
        if not prompts:
            return Requests()
        syntax = getattr(self.encoder, "syntax", True)  # prompt_weighting=false: prompts are plain text
        for prompt in dict.fromkeys(prompts) if syntax else ():
            check_prompt(prompt, key)
        values = [str(prompts[i % len(prompts)]) for i in range(n)]
        return Requests(values, None, None, [plain_text(p) for p in values] if syntax else values)

    def parse(self, inputs: Mapping[str, Any], n: int) -> Requests:
        self.refuse_foreign(inputs)
        prompt = inputs.get("prompt")
        if prompt is None:
            raise ConfigError("A text-conditioned model needs a prompt: pass prompt=\"...\" (config key `prompt`).")
        if inputs.get("negative_prompt") and getattr(self.encoder, "syntax", True):
            check_prompt(str(inputs["negative_prompt"]), "negative_prompt")
        return self.draw(n, prompts=[str(prompt)], key="prompt")

    def record(self, requests: Requests) -> dict[str, Any]:
        values = sorted(set(requests.values or []))
        return {"prompt": values[0] if len(values) == 1 else values}

    def rows(self, requests: Requests) -> list[dict[str, Any]]:
        return [{"prompt": p} for p in requests.values or []]


def check_prompt(prompt: str, key: str) -> None:
    """A ConfigError naming `key` when the prompt's editing syntax is malformed (`[a:b:c]` with c no number)."""
    try:
        parse_prompt(str(prompt))
    except PromptSyntaxError as err:
        raise PromptSyntaxError(f"Bad value for config key `{key}`: {err}") from None


def _no_captions() -> ConfigError:
    return ConfigError.bad_value("caption", "the training data has no captions and no caption was given",
                                 "Pass caption='a photo of sks dog' (every image's caption) or use data=image_text "
                                 "(image-caption pairs).")


def _rows(batch: Mapping[str, Any]) -> int:
    first = batch["image"] if "image" in batch else batch["latent_mean"]
    return int(first.shape[0])
