"""Text-conditioned diffusion: a `DiffusionModule` whose condition is the context of a frozen text encoder.

Training (Rombach et al. 2022, LDM Sec. 3.3; Ho & Salimans 2022): captions are replaced by the empty
prompt with probability `model.condition.drop_prob`, encoded by the frozen CLIP text encoder, and reach the
net as `cond` = context [B, L, D] for its cross-attention (`difflab.conditions.TextPrompt`). Sampling:
`encode_prompts` gives the condition, and guidance's unconditional branch is the negative prompt's context
(the empty prompt by default), as in Stable Diffusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from difflab.conditions import TextPrompt
from difflab.diffusion.conditioning import repeat_rows
from difflab.errors import ConfigError
from difflab.lit.diffusion import DiffusionModule
from difflab.nets.text import PromptEncoder
from difflab.samplers.base import StepCallback
from difflab.samplers.generate import Edit, SamplerSpec


class TextDiffusionModule(DiffusionModule):
    """`DiffusionModule` + frozen `text_encoder`; batches hold captions (`condition`: a `TextPrompt`)."""

    def __init__(self, *args: Any, text_encoder: PromptEncoder, condition: TextPrompt | None = None,
                 **kwargs: Any) -> None:
        condition = condition or TextPrompt()
        if not isinstance(condition, TextPrompt):
            raise ConfigError.bad_value("model.condition", f"a text-conditioned model needs a TextPrompt condition, "
                                        f"got {type(condition).__name__}",
                                        "Use model.condition._target_=difflab.conditions.TextPrompt.")
        super().__init__(*args, condition=condition, **kwargs)
        self.text_encoder = text_encoder
        condition.attach(text_encoder)
        context_dim = getattr(self.net, "context_dim", None)
        if context_dim is not None and context_dim != text_encoder.dim:
            raise ConfigError.bad_value("model.net.context_dim", f"{context_dim}, but the text encoder's hidden size "
                                        f"is {text_encoder.dim}", f"Set model.net.context_dim={text_encoder.dim}.")

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Any:
        """The condition (on this module's device) of prompts in the web UI's prompt language: context [B, L, D],
        a `TextCond` or a `PromptSchedule` (`difflab.nets.text`)."""
        return self.condition.encode(prompts).to(self.device)

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, batch_size: int | None = None, sampler: SamplerSpec | None = None,
                 cond: Any = None, first_index: int = 0, guidance_scale: float | None = None,
                 guidance_rescale: float | None = None, edit: Edit | None = None,
                 uncond: Any = None, progress: Any = None,
                 callback: StepCallback | None = None) -> tuple[Tensor, int]:
        """`DiffusionModule.generate` with `cond` = `encode_prompts(...)` [n, L, D]; `uncond` ([1, L, D], e.g. a
        negative prompt) is guidance's unconditional branch, the empty prompt when None. Without `cond`: the
        unconditional model (the empty prompt, no guidance), e.g. for in-training sample grids."""
        if cond is None:
            cond, guidance_scale = repeat_rows(self.encode_prompts([""]), n), 1.0
        return super().generate(n, seed=seed, batch_size=batch_size, sampler=sampler, cond=cond,
                                first_index=first_index, guidance_scale=guidance_scale,
                                guidance_rescale=guidance_rescale, edit=edit, uncond=uncond, progress=progress,
                                callback=callback)
