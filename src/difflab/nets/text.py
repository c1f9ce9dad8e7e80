"""Frozen CLIP text encoder (Radford et al. 2021) giving the cross-attention context of text-to-image models.

    prompts (list of str) -> context [B, L, D]: the last hidden states of transformers' `CLIPTextModel`
    over `L = tokenizer.model_max_length` (77) tokens [BOS, prompt tokens (at most L - 2), EOS, padding],
    exactly what Stable Diffusion's pipeline feeds its UNet.

Prompt weighting (`nets/prompts.py` syntax, as in the AUTOMATIC1111 web UI): every prompt token gets
the weight of its chunk (BOS, EOS and padding 1); the hidden state of token i is multiplied by w_i and
the result rescaled so that its mean over (L, D) equals the unweighted one ("scale, then restore the
mean"), per prompt. A prompt without brackets gives exactly the unweighted context.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.errors import MissingFileError, NetworkError
from difflab.nets.prompts import parse_prompt_weights
from difflab.utils.weights import ALLOW_DOWNLOAD, downloads_allowed

__all__ = ["CLIPTextEncoder", "PretrainedNotFoundError", "resolve_pretrained"]

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


class CLIPTextEncoder(nn.Module):
    """prompts -> CLIP last hidden states [B, L, D] with prompt weighting; frozen (no gradients, eval mode)."""

    def __init__(self, tokenizer: Any, model: nn.Module, weighting: bool = True) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.weighting = weighting
        self.max_length = min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings))
        self.dim = int(model.config.hidden_size)  # D, the UNet's cross-attention context_dim

    @classmethod
    def from_pretrained(cls, path: str, key: str = "model.text_encoder.path", weighting: bool = True) -> CLIPTextEncoder:
        """From a CLIP folder (tokenizer + text model files) or a Stable Diffusion folder (tokenizer/, text_encoder/)."""
        from transformers import (  # heavy (seconds to import); only models and metrics with text encoders need it
            CLIPTextModel,
            CLIPTokenizer,
        )

        root = resolve_pretrained(path, key, "CLIP text encoder", "openai/clip-vit-large-patch14")
        sd_layout = (root / "text_encoder").is_dir()
        try:
            tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer" if sd_layout else root, local_files_only=True)
            model = CLIPTextModel.from_pretrained(root / "text_encoder" if sd_layout else root, local_files_only=True)
        except (OSError, ValueError) as err:
            raise PretrainedNotFoundError(f"cannot load a CLIP tokenizer and text model from '{root}' (config key "
                                          f"`{key}`): {err}") from None
        return cls(tokenizer, model, weighting)

    def train(self, mode: bool = True) -> CLIPTextEncoder:
        return super().train(False)  # frozen: always in eval mode

    def tokenize(self, prompt: str) -> tuple[list[int], list[float]]:
        """Token ids [L] (BOS, tokens, EOS, padding) and per-token weights [L] of one prompt."""
        tok = self.tokenizer
        chunks = parse_prompt_weights(prompt) if self.weighting else [(prompt, 1.0)]
        ids: list[int] = []
        weights: list[float] = []
        for text, w in chunks:
            piece = tok(text, add_special_tokens=False).input_ids if text else []
            ids += piece
            weights += [w] * len(piece)
        room = self.max_length - 2
        if len(ids) > room:
            log.warning("prompt truncated to %d tokens: %r", room, prompt)
            ids, weights = ids[:room], weights[:room]
        pad = self.max_length - len(ids) - 2
        ids = [tok.bos_token_id, *ids, tok.eos_token_id] + [tok.pad_token_id] * pad
        return ids, [1.0, *weights, 1.0] + [1.0] * pad

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> Tensor:
        """Context [B, L, D] (float32) of the prompts, on the text model's device."""
        device = next(self.model.parameters()).device
        pairs = [self.tokenize(p) for p in prompts]
        ids = torch.tensor([p[0] for p in pairs], device=device)  # (B, L)
        weights = torch.tensor([p[1] for p in pairs], device=device, dtype=torch.float32)  # (B, L)
        mask = (ids != self.tokenizer.pad_token_id).long() if getattr(self.model.config, "use_attention_mask", False) else None
        z = self.model(ids, attention_mask=mask).last_hidden_state.float()  # (B, L, D)
        weighted = (weights != 1.0).any(dim=1)  # (B,)
        if weighted.any():
            mean = z.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
            scaled = z * weights[..., None]
            new_mean = scaled.mean(dim=(1, 2), keepdim=True)
            ok = new_mean.abs() > 1e-4 * scaled.abs().mean(dim=(1, 2), keepdim=True)
            scaled = torch.where(ok, scaled * (mean / torch.where(ok, new_mean, 1.0)), scaled)
            z = torch.where(weighted[:, None, None], scaled, z)
        return z
