"""Text-conditioned diffusion: a `DiffusionModule` whose condition is the context of a frozen text encoder.

Training (Rombach et al. 2022, LDM Sec. 3.3; Ho & Salimans 2022): captions are replaced by the empty
prompt with probability `cond_drop_prob`, encoded by the frozen CLIP text encoder, and reach the net as
`cond` = context [B, L, D] for its cross-attention. Sampling: `encode_prompts` gives the condition, and
guidance's unconditional branch is the negative prompt's context (the empty prompt by default), as in
Stable Diffusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from difflab.lit.diffusion import DiffusionModule
from difflab.nets.text import CLIPTextEncoder
from difflab.samplers.generate import Edit, SamplerSpec


class TextDiffusionModule(DiffusionModule):
    """`DiffusionModule` + frozen `text_encoder`; batches hold captions under `cond_key` (default "caption")."""

    def __init__(self, *args: Any, text_encoder: CLIPTextEncoder, cond_key: str = "caption",
                 cond_drop_prob: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, cond_key=cond_key, cond_drop_prob=0.0, **kwargs)  # dropout happens on the captions
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"model.cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        self.caption_drop_prob = float(cond_drop_prob)
        self.text_encoder = text_encoder
        context_dim = getattr(self.net, "context_dim", None)
        if context_dim is not None and context_dim != text_encoder.dim:
            raise ValueError(f"model.net.context_dim={context_dim} but the text encoder's hidden size is "
                             f"{text_encoder.dim}; set model.net.context_dim={text_encoder.dim}")

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """Context [B, L, D] (float32, on this module's device) of prompts with `(word:1.4)` weighting."""
        unique = list(dict.fromkeys(prompts))  # encode each distinct prompt once
        table = self.text_encoder(unique)
        index = torch.tensor([unique.index(p) for p in prompts], device=table.device)
        return table[index].to(self.device)

    def _inputs(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        captions = [str(c) for c in batch[self.cond_key]]
        if self.training and self.caption_drop_prob > 0:  # classifier-free guidance: the empty prompt
            drop = torch.rand(len(captions)).lt(self.caption_drop_prob).tolist()
            captions = ["" if d else c for c, d in zip(captions, drop)]
        return super()._inputs({**batch, self.cond_key: self.encode_prompts(captions)})

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, batch_size: int | None = None, sampler: SamplerSpec | None = None,
                 cond: Tensor | None = None, first_index: int = 0, guidance_scale: float | None = None,
                 guidance_rescale: float | None = None, edit: Edit | None = None,
                 uncond: Tensor | None = None) -> tuple[Tensor, int]:
        """`DiffusionModule.generate` with `cond` = `encode_prompts(...)` [n, L, D]; `uncond` ([1, L, D], e.g. a
        negative prompt) is guidance's unconditional branch, the empty prompt when None. Without `cond`: the
        unconditional model (the empty prompt, no guidance), e.g. for in-training sample grids."""
        if cond is None:
            cond, guidance_scale = self.encode_prompts([""]).expand(n, -1, -1), 1.0
        if uncond is None:
            uncond = self.encode_prompts([""])
        return super().generate(n, seed=seed, batch_size=batch_size, sampler=sampler, cond=cond,
                                first_index=first_index, guidance_scale=guidance_scale,
                                guidance_rescale=guidance_rescale, edit=edit, uncond=uncond)
