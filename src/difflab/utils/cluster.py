"""Multi-process and cluster helpers: the run seed, rank zero, and where a requeued run resumes from.

A SLURM job that is preempted or requeued starts again in the same run folder (the sbatch script
derives it from $SLURM_JOB_ID, a submitit sweep job keeps its sweep sub-folder). Lightning's
SLURM environment saves `hpc_ckpt_<n>.ckpt` there on SIGUSR1 and requeues the job; `resume_path`
finds the newest checkpoint of the folder so the run continues where it stopped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def run_seed() -> int:
    """The run's `seed` as given to `seed_everything` (Lightning keeps it in $PL_GLOBAL_SEED); 0 if unset."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def is_rank_zero() -> bool:
    """True on the process of global rank 0 (read from RANK / LOCAL_RANK / SLURM_PROCID before DDP starts)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def resume_path(run_dir: Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from: `ckpt_path` when given, else the newest of the run folder's own
    `hpc_ckpt_*.ckpt` (saved on SLURM's signal) and `checkpoints/last.ckpt` (a requeued job), else None."""
    if ckpt_path:
        return str(ckpt_path)
    found = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    found = [p for p in found if p.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("resuming from this run folder's checkpoint %s", newest)
    return str(newest)
