"""What difflab puts in W&B besides scalars: checkpoints as artifacts, evaluation runs linked to their training
run, and Tables of samples with an image column.

- A training run logs its final `last.ckpt` (aliases `latest`, `last`) and `best.ckpt` (`best`) as versions of
  the artifact `model-<run id>` (type `model`), online or offline (an offline run keeps them for `wandb sync`).
- Every training run has a group: its sweep's name, else its own run id. An evaluation (or sampling) run of a
  checkpoint joins that group, records `train_run_id`, `train_checkpoint` and `train_artifact` in its config and,
  online, declares the artifact version as its input (`use_artifact`; W&B refuses inputs in offline runs, so
  offline the config records the link).
- sample.py, evaluate.py and the final metric pass of training log `samples/table`: one row per image with the
  image, its index and its condition.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

TABLE_KEY = "samples/table"
WANDB_ID_FILE = "wandb_id.txt"  # a run folder's W&B run id (`difflab.utils.loggers`): resumes and links continue it


def is_wandb(logger: Any) -> bool:
    """Whether a Lightning logger is a W&B one."""
    return isinstance(logger, WandbLogger)


def artifact_name(run_id: str) -> str:
    """The model artifact of a training run."""
    return f"model-{run_id}"


def log_checkpoints(logger: Any, last: Path, best: str | Path | None, metadata: dict[str, Any]) -> list[str]:
    """Log `last` (aliases latest, last) and `best` (alias best) as versions of `model-<run id>`; returns the
    aliases logged."""
    import wandb  # heavy to import; only runs that log to W&B need it

    run = logger.experiment
    logged = []
    for path, aliases in ((Path(last), ["latest", "last"]), (Path(best) if best else None, ["best"])):
        if path is None or not path.is_file():
            continue
        artifact = wandb.Artifact(artifact_name(run.id), type="model", metadata={**metadata, "file": path.name})
        artifact.add_file(str(path), name="model.ckpt")  # copied to W&B's staging area: later saves cannot change it
        run.log_artifact(artifact, aliases=aliases)
        logged += aliases
    log.info("W&B: logged %s as %s (%s)", ", ".join(p for p in ("last", "best") if p in logged),
             artifact_name(run.id), "uploaded by `wandb sync`" if getattr(logger, "_offline", False) else "uploading")
    return logged


def training_link(ckpt: str | Path, run_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The W&B training run of a checkpoint (<run>/checkpoints/<name>.ckpt): its id (wandb_id.txt of the run
    folder), group and the artifact alias of this file; None when that run did not log to W&B."""
    ckpt = Path(ckpt).resolve()
    found = next((p for p in (ckpt.parent.parent / WANDB_ID_FILE, ckpt.parent / WANDB_ID_FILE) if p.is_file()), None)
    if found is None:
        return None
    run_id = found.read_text().strip()
    wandb_cfg = ((run_config or {}).get("logger") or {}).get("wandb") or {}
    alias = "best" if ckpt.stem == "best" else "last"
    return {"train_run_id": run_id, "group": wandb_cfg.get("group") or run_id, "project": wandb_cfg.get("project"),
            "train_checkpoint": str(ckpt), "train_artifact": f"{artifact_name(run_id)}:{alias}"}


def link_training_run(logger: Any, link: dict[str, Any]) -> None:
    """Record the training run in this run's config and, online, declare its checkpoint artifact as input."""
    run = logger.experiment
    run.config.update({k: v for k, v in link.items() if k != "group"}, allow_val_change=True)
    if getattr(logger, "_offline", False):
        return
    name = f"{link['project']}/{link['train_artifact']}" if link.get("project") else link["train_artifact"]
    try:
        run.use_artifact(name, type="model")
    except Exception as err:  # noqa: BLE001  (not logged by that run, or not synced yet: the config keeps the link)
        log.warning("W&B: the checkpoint artifact %s cannot be used as input (%s); the link is in the config", name, err)


def log_sample_table(logger: Any, images: torch.Tensor, rows: list[dict[str, Any]] | None = None,
                     step: int | None = None, limit: int = 64) -> None:
    """A Table of (at most `limit`) samples: index, image, and each row's condition columns."""
    import wandb  # heavy to import; only runs that log to W&B need it

    rows = rows or [{} for _ in range(len(images))]
    extra = list(rows[0]) if rows else []
    table = wandb.Table(columns=["index", "image", *extra])
    pictures = ((images[:limit].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, C, H, W)
    for i, (picture, row) in enumerate(zip(pictures, rows)):
        array = picture.permute(1, 2, 0).cpu().numpy()  # (H, W, C)
        table.add_data(i, wandb.Image(array[..., 0] if array.shape[-1] == 1 else array), *[row.get(k) for k in extra])
    if step is not None:
        logger.log_metrics({TABLE_KEY: table}, step=step)  # beside the run's other values of this trainer step
    else:
        logger.experiment.log({TABLE_KEY: table})


def wandb_loggers(loggers: list[Any]) -> list[Any]:
    """The W&B loggers among `loggers`."""
    return [lg for lg in loggers if is_wandb(lg)]
