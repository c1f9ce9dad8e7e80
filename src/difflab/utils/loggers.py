"""Experiment loggers: W&B (online with a key, offline without) and CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_has_credentials() -> bool:
    """True when an API key is configured (env var or ~/.netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """'auto' -> $WANDB_MODE if set, else 'online' with credentials and 'offline' without (never hangs offline)."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")


def wandb_logger(
    save_dir: str,
    project: str = "difflab",
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning WandbLogger writing under `save_dir`, offline when no API key is configured."""
    mode = resolve_wandb_mode(mode)
    os.environ["WANDB_MODE"] = mode
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir, project=project, name=name, group=group, job_type=job_type,
        tags=list(tags or []), offline=(mode == "offline"), mode=mode, **kwargs,
    )
