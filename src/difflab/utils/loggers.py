"""Experiment loggers: W&B (online with a key, offline without) and CSV."""

from __future__ import annotations

import os
import secrets
import string
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


WANDB_ID_FILE = "wandb_id.txt"


def wandb_run_id(save_dir: str | Path, resume_from: str | None = None) -> str | None:
    """The W&B run id of this run folder: the one stored in `save_dir` (a requeued job), else the one of
    the run folder that `resume_from` (a checkpoint) belongs to, else a new one; stored in `save_dir`.
    Only rank 0 logs to W&B: other ranks get None and write nothing."""
    from difflab.utils.cluster import is_rank_zero

    if not is_rank_zero():
        return None
    here = Path(save_dir) / WANDB_ID_FILE
    candidates = [here]
    if resume_from:
        ckpt = Path(resume_from).resolve()
        candidates += [ckpt.parent / WANDB_ID_FILE, ckpt.parent.parent / WANDB_ID_FILE]
    found = next((p for p in candidates if p.is_file()), None)
    if found is not None:
        run_id = found.read_text().strip()
    else:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id form
    here.write_text(run_id + "\n")
    return run_id


def wandb_logger(
    save_dir: str,
    project: str = "difflab",
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    id: str | None = None,  # noqa: A002  (wandb's name)
    resume_from: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning WandbLogger writing under `save_dir`, offline when no API key is configured.

    The run id (`id`, else `wandb_run_id(save_dir, resume_from)`) is kept in `save_dir/wandb_id.txt`,
    so a resumed or requeued run continues the same W&B run."""
    mode = resolve_wandb_mode(mode)
    os.environ["WANDB_MODE"] = mode
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run_id = id or wandb_run_id(save_dir, resume_from)
    return WandbLogger(
        save_dir=save_dir, project=project, name=name, group=group, job_type=job_type,
        tags=list(tags or []), offline=(mode == "offline"), mode=mode, id=run_id, resume="allow", **kwargs,
    )
