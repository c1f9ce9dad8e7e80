"""OmegaConf resolvers used by conf/ (registered on import of difflab.cli)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def auto_precision() -> str:
    """bf16-mixed on CUDA GPUs that support bf16, else 32-true."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def fused_adamw() -> bool:
    """Use the fused AdamW kernel where torch has one for the training device (CUDA, and CPU since torch 2.4)."""
    return True


def register_resolvers() -> None:
    """Idempotently register difflab's resolvers."""
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("fused_adamw", fused_adamw, replace=True)
