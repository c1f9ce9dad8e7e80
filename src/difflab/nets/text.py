"""Frozen CLIP text encoders (Radford et al. 2021) giving the cross-attention context of text-to-image models.

    prompts (list of str) -> context [B, 77 k, D]: for each chunk of 75 prompt tokens, the hidden states of
    transformers' `CLIPTextModel` over [BOS, tokens, EOS, padding] (77 = tokenizer.model_max_length), the k chunks'
    states concatenated (`nets/prompts.py`: chunking, BREAK). A prompt of at most 75 tokens gives exactly what
    Stable Diffusion's pipeline feeds its UNet. `layer` picks the states: -1 the last (after the final LayerNorm,
    SD 1.x / 2.x), -2 the penultimate layer's (SDXL).

Prompt weighting (`nets/prompts.py` syntax, as in the AUTOMATIC1111 web UI): every prompt token gets
the weight of its chunk (BOS, EOS and padding 1); the hidden state of token i is multiplied by w_i and
the result rescaled so that its mean over (77, D) equals the unweighted one ("scale, then restore the
mean"), per prompt and chunk. A prompt without brackets gives exactly the unweighted context.

Outputs: a Tensor [B, L, D] when every prompt has the same number of chunks; a `TextCond` with `lengths` when
they differ, and with the pooled embedding and size ids of SDXL (`SDXLTextEncoder`: the two encoders' penultimate
states concatenated, [B, L, 768 + 1280], the pooled projection of the second, and time ids [B, 6]); a
`PromptSchedule` when a prompt changes over the steps ([from:to:when], [a|b]), encoded once the sampler's grid is
known (`difflab.diffusion.conditioning`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.diffusion.conditioning import GridConditions, StepConditions, TextCond
from difflab.errors import MissingFileError, NetworkError
from difflab.nets.prompts import BREAK, ScheduledPrompt, parse_prompt, parse_prompt_weights
from difflab.utils.weights import ALLOW_DOWNLOAD, downloads_allowed

__all__ = ["CLIPTextEncoder", "PretrainedNotFoundError", "PromptSchedule", "SDXLTextEncoder", "resolve_pretrained"]

COMMA_BACKTRACK = 20  # a full chunk ends after a comma among its last 20 tokens (the web UI's default)

log = logging.getLogger(__name__)


class PretrainedNotFoundError(MissingFileError):
    """Pretrained weights are not on disk; the message names the folder, the config key and how to get them."""


def resolve_pretrained(name_or_path: str, key: str, what: str, example: str) -> Path:
    """A local folder for a pretrained model: the folder itself, or a Hugging Face Hub name found in the cache
    (downloaded only with DIFFLAB_ALLOW_DOWNLOAD=1)."""
    if not name_or_path:
        raise PretrainedNotFoundError(f"{what}: config key `{key}` is empty; set it to a local folder or a Hub name "
                                      f"such as {example}")
    local = Path(str(name_or_path)).expanduser()
    if local.is_dir():
        return local
    name = str(name_or_path)
    hub = name if "/" in name and not name.startswith((".", "/", "~")) else example
    how = (f"On a machine with internet run `huggingface-cli download {hub}` (it fills the Hugging Face cache, "
           "~/.cache/huggingface/hub) or save the model with `save_pretrained(<folder>)`, and set the key to the folder")
    if str(name_or_path).startswith((".", "/", "~")) or "/" not in str(name_or_path):
        raise PretrainedNotFoundError(f"{what} not found: folder '{local}' does not exist (config key `{key}`). {how}.")
    from huggingface_hub import (
        snapshot_download,  # comes with transformers; only hub lookups need it
    )

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception:  # not in the cache
        if downloads_allowed():
            try:
                return Path(snapshot_download(str(name_or_path)))
            except Exception as err:  # huggingface_hub raises many types for a failed download
                raise NetworkError(f"{what} '{name_or_path}' (config key `{key}`): the download failed ({err}). "
                                   f"{how}.") from None
    raise PretrainedNotFoundError(f"{what} '{name_or_path}' is not in the Hugging Face cache (config key `{key}`). "
                                  f"{how}; or let difflab download it with {ALLOW_DOWNLOAD}=1.")


class PromptEncoder(nn.Module):
    """prompts -> the condition of a text-to-image net; frozen (no gradients, eval mode). Subclasses `encode` texts
    without schedules; `forward` parses the prompts and defers step-dependent ones to a `PromptSchedule`."""

    syntax = True  # the prompt language of nets/prompts.py (False: plain text, still chunked)
    dim: int

    def train(self, mode: bool = True) -> PromptEncoder:
        return super().train(False)  # frozen: always in eval mode

    def encode(self, texts: Sequence[str]) -> Tensor | TextCond:
        """The condition of texts without schedules (weights and BREAK allowed)."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> Tensor | TextCond | PromptSchedule:
        """The condition of the prompts: encoded now, or a `PromptSchedule` when one changes over the steps."""
        if not self.syntax:
            return self.encode(list(prompts))
        parsed = [parse_prompt(str(p)) for p in prompts]
        if all(p.static for p in parsed):
            return self.encode([p.at(1, 1) for p in parsed])
        return PromptSchedule(parsed, self.encode)


class CLIPTextEncoder(PromptEncoder):
    """prompts -> CLIP hidden states [B, 77 k, D] with chunking and prompt weighting (module docstring)."""

    def __init__(self, tokenizer: Any, model: nn.Module, weighting: bool = True, layer: int = -1) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.syntax = self.weighting = weighting
        self.layer = int(layer)
        self.max_length = min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings))
        self.dim = int(model.config.hidden_size)  # D, the UNet's cross-attention context_dim
        self.comma = tokenizer.get_vocab().get(",</w>")

    @classmethod
    def from_pretrained(cls, path: str, key: str = "model.text_encoder.path", weighting: bool = True,
                        layer: int = -1, suffix: str = "", projection: bool = False) -> CLIPTextEncoder:
        """From a CLIP folder (tokenizer + text model files) or a Stable Diffusion folder (tokenizer<suffix>/,
        text_encoder<suffix>/; `projection`: a CLIPTextModelWithProjection, SDXL's second encoder)."""
        from transformers import (  # heavy (seconds to import); only models with text encoders need it
            CLIPTextModel,
            CLIPTextModelWithProjection,
            CLIPTokenizer,
        )

        root = resolve_pretrained(path, key, "CLIP text encoder", "openai/clip-vit-large-patch14")
        sd_layout = (root / f"text_encoder{suffix}").is_dir()
        model_cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        try:
            tokenizer = CLIPTokenizer.from_pretrained(root / f"tokenizer{suffix}" if sd_layout else root,
                                                      local_files_only=True)
            model = model_cls.from_pretrained(root / f"text_encoder{suffix}" if sd_layout else root, local_files_only=True)
        except (OSError, ValueError) as err:
            raise PretrainedNotFoundError(f"cannot load a CLIP tokenizer and text model from '{root}' (config key "
                                          f"`{key}`): {err}") from None
        return cls(tokenizer, model, weighting, layer)

    def chunks(self, text: str) -> list[tuple[list[int], list[float]]]:
        """[(token ids [77], weights [77]), ...] of one text: 75-token chunks [BOS, tokens, EOS, padding] with
        BREAK and the comma backtrack (`nets/prompts.py`), as the web UI cuts them."""
        room = self.max_length - 2
        pieces = parse_prompt_weights(text) if self.weighting else [(text, 1.0)]
        out: list[tuple[list[int], list[float]]] = []
        ids: list[int] = []
        weights: list[float] = []
        last_comma = -1
        for piece, w in pieces:
            if (piece, w) == BREAK:
                out.append(self._framed(ids, weights))
                ids, weights, last_comma = [], [], -1
                continue
            for token in self.tokenizer(piece, add_special_tokens=False, verbose=False).input_ids if piece else []:
                if token == self.comma:
                    last_comma = len(ids)
                elif len(ids) == room and last_comma != -1 and len(ids) - last_comma <= COMMA_BACKTRACK:
                    cut = last_comma + 1  # the text after the comma moves to the next chunk
                    out.append(self._framed(ids[:cut], weights[:cut]))
                    ids, weights, last_comma = ids[cut:], weights[cut:], -1
                if len(ids) == room:
                    out.append(self._framed(ids, weights))
                    ids, weights, last_comma = [], [], -1
                ids.append(token)
                weights.append(w)
        if ids or not out:
            out.append(self._framed(ids, weights))
        return out

    def _framed(self, ids: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
        tok, pad = self.tokenizer, self.max_length - 2 - len(ids)
        return [tok.bos_token_id, *ids, tok.eos_token_id] + [tok.pad_token_id] * pad, [1.0, *weights, 1.0] + [1.0] * pad

    def states(self, texts: Sequence[str]) -> tuple[list[Tensor], Tensor | None]:
        """Each text's weighted hidden states [77 k, D] (float32), and the pooled projection of its first chunk
        [B, P] (a CLIPTextModelWithProjection; else None)."""
        device = next(self.model.parameters()).device
        per_text = [self.chunks(t) for t in texts]
        flat = [c for chunks in per_text for c in chunks]
        ids = torch.tensor([c[0] for c in flat], device=device)  # (C, 77)
        weights = torch.tensor([c[1] for c in flat], device=device, dtype=torch.float32)  # (C, 77)
        mask = (ids != self.tokenizer.pad_token_id).long() if getattr(self.model.config, "use_attention_mask", False) else None
        out = self.model(ids, attention_mask=mask, output_hidden_states=self.layer != -1)
        z = (out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]).float()  # (C, 77, D)
        z = _weighted(z, weights)
        starts = torch.tensor([0, *[len(c) for c in per_text]]).cumsum(0).tolist()
        contexts = [z[a:b].flatten(0, 1) for a, b in zip(starts[:-1], starts[1:])]  # (77 k, D) each
        embeds = getattr(out, "text_embeds", None)
        return contexts, None if embeds is None else embeds[starts[:-1]].float()

    def encode(self, texts: Sequence[str]) -> Tensor | TextCond:
        """Context [B, L, D] (float32, on the text model's device), or a `TextCond` when the lengths differ."""
        contexts, _ = self.states(texts)
        return assemble(contexts)


def _weighted(z: Tensor, weights: Tensor) -> Tensor:
    """Token states z [C, L, D] times their weights [C, L], each chunk's mean over (L, D) restored (module docstring)."""
    weighted = (weights != 1.0).any(dim=1)  # (C,)
    if not weighted.any():
        return z
    mean = z.mean(dim=(1, 2), keepdim=True)  # (C, 1, 1)
    scaled = z * weights[..., None]
    new_mean = scaled.mean(dim=(1, 2), keepdim=True)
    ok = new_mean.abs() > 1e-4 * scaled.abs().mean(dim=(1, 2), keepdim=True)
    scaled = torch.where(ok, scaled * (mean / torch.where(ok, new_mean, 1.0)), scaled)
    return torch.where(weighted[:, None, None], scaled, z)


def assemble(contexts: Sequence[Tensor], pooled: Tensor | None = None, time_ids: Tensor | None = None) -> Tensor | TextCond:
    """Per-text contexts [L_b, D] as a batch: a Tensor [B, L, D] when they have one length and nothing else comes
    with them, else a `TextCond` (zero-padded, with `lengths` when they differ)."""
    lengths = torch.tensor([c.shape[0] for c in contexts])
    longest = int(lengths.max())
    context = torch.stack([torch.nn.functional.pad(c, (0, 0, 0, longest - c.shape[0])) for c in contexts])
    ragged = bool((lengths != longest).any())
    if not ragged and pooled is None and time_ids is None:
        return context
    return TextCond(context, pooled, time_ids, lengths.to(context.device) if ragged else None)


class SDXLTextEncoder(PromptEncoder):
    """SDXL's two CLIP encoders: context [B, L, D1 + D2] of both penultimate layers, the second's pooled projection
    [B, P] and the size conditioning `time_ids` (original size, crop top-left, target size; SDXL Sec. 2.2)."""

    def __init__(self, first: CLIPTextEncoder, second: CLIPTextEncoder, time_ids: Sequence[float],
                 zero_null: bool = True) -> None:
        super().__init__()
        self.first, self.second = first, second
        self.syntax = first.syntax
        self.dim = first.dim + second.dim
        self.zero_null = bool(zero_null)  # the null prompt is all zeros (`force_zeros_for_empty_prompt`)
        self.register_buffer("time_ids", torch.tensor([float(v) for v in time_ids])[None], persistent=False)  # (1, 6)

    def encode(self, texts: Sequence[str]) -> TextCond:
        """`TextCond` of texts without schedules (module docstring)."""
        a, _ = self.first.states(texts)
        b, pooled = self.second.states(texts)
        if pooled is None:
            raise ValueError("SDXL's second text encoder must be a CLIPTextModelWithProjection (pooled text embeds)")
        if [x.shape[0] for x in a] != [x.shape[0] for x in b]:
            raise ValueError("SDXL's two tokenizers cut a prompt into different numbers of chunks")
        contexts = [torch.cat([x, y], dim=-1) for x, y in zip(a, b)]
        out = assemble(contexts, pooled, self.time_ids.to(pooled.device).expand(len(texts), -1))
        assert isinstance(out, TextCond)
        return out


class PromptSchedule(StepConditions):
    """Prompts whose text changes over the steps (`nets/prompts.py`), encoded when the sampler's grid is known: one
    entry per distinct text, `on_grid` gives each row's entry at each step (`diffusion/conditioning.py`)."""

    def __init__(self, prompts: Sequence[ScheduledPrompt], encode: Callable[[list[str]], Any],
                 device: torch.device | None = None) -> None:
        self.prompts, self.encode, self._device = list(prompts), encode, device

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, rows: Any) -> PromptSchedule:
        index = range(len(self))[rows] if isinstance(rows, slice) else torch.as_tensor(rows).reshape(-1).tolist()
        return PromptSchedule([self.prompts[i] for i in index], self.encode, self._device)

    @property
    def device(self) -> torch.device:
        return self._device or torch.device("cpu")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PromptSchedule:
        return PromptSchedule(self.prompts, self.encode, torch.device(device) if device is not None else self._device)

    def on_grid(self, sigmas: Tensor) -> GridConditions:
        """The distinct texts of every row over the N = len(sigmas) - 1 steps, encoded, and the index [B, N]."""
        steps = len(sigmas) - 1
        texts: dict[str, int] = {}
        index = torch.empty(len(self), steps, dtype=torch.long)
        for b, prompt in enumerate(self.prompts):
            first = 0
            for last, text in prompt.segments(steps):
                index[b, first:last] = texts.setdefault(text, len(texts))
                first = last
        table = self.encode(list(texts))
        return GridConditions(table.to(self.device), index.to(self.device), sigmas)

    def __repr__(self) -> str:
        return f"PromptSchedule({[p.prompt for p in self.prompts]!r})"
