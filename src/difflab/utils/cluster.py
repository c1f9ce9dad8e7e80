"""Multi-process and cluster helpers: the run seed, rank zero, the world and its shards, and where a requeued run
resumes from.

A SLURM job that is preempted or requeued starts again in the same run folder (the sbatch script
derives it from $SLURM_JOB_ID, a submitit sweep job keeps its sweep sub-folder). Lightning's
SLURM environment saves `hpc_ckpt_<n>.ckpt` there on SIGUSR1 and requeues the job; `resume_path`
finds the newest checkpoint of the folder so the run continues where it stopped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from difflab.errors import CorruptFileError
from difflab.utils.checkpoint_files import load_checkpoint_file

log = logging.getLogger(__name__)


def run_seed() -> int:
    """The run's `seed` as given to `seed_everything` (Lightning keeps it in $PL_GLOBAL_SEED); 0 if unset."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def is_rank_zero() -> bool:
    """True on the process of global rank 0 (read from RANK / LOCAL_RANK / SLURM_PROCID before DDP starts)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def reduce_scalar(value: float, op: dist.ReduceOp, device: torch.device) -> float:
    """`value` reduced over all ranks with `op` (MIN, MAX, SUM); itself without a process group."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return float(t.item())


def shard(n: int, rank: int, world_size: int) -> range:
    """Contiguous block of range(n) for `rank`, with even boundaries (LPIPS pairs never straddle ranks)."""
    pairs = (n + 1) // 2
    lo, hi = pairs * rank // world_size, pairs * (rank + 1) // world_size
    return range(min(2 * lo, n), min(2 * hi, n))


def _run_checkpoints(run_dir: Path) -> list[Path]:
    """The run folder's own checkpoints (hpc_ckpt_*.ckpt, checkpoints/*.ckpt), newest first."""
    found = [p for p in (*run_dir.glob("hpc_ckpt_*.ckpt"), *run_dir.glob("checkpoints/*.ckpt")) if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def loadable_or_fallback(path: Path, run_dir: Path | None = None) -> Path:
    """`path` when it loads; a broken `last.ckpt` (or a requeue's pick, `run_dir` given) falls back to the newest
    loadable checkpoint of its run folder with one warning naming both files; else the CorruptFileError."""
    try:
        load_checkpoint_file(path, key="ckpt_path", mmap=True)
        return path
    except CorruptFileError as err:
        if run_dir is None and path.name != "last.ckpt":
            raise
        folder = run_dir or (path.parent.parent if path.parent.name == "checkpoints" else path.parent)
        for other in (p for p in _run_checkpoints(folder) if p.resolve() != path.resolve()):
            try:
                load_checkpoint_file(other, key="ckpt_path", mmap=True)
            except CorruptFileError:
                continue
            log.warning("cannot resume from %s (%s); resuming from %s instead, the newest loadable checkpoint of "
                        "the run folder", path, str(err).split(": ", 1)[-1].split(", config key")[0], other)
            return other
        raise


def resume_path(run_dir: Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from: `ckpt_path` when given, else the newest of the run folder's own
    `hpc_ckpt_*.ckpt` (saved on SLURM's signal) and `checkpoints/last.ckpt` (a requeued job), else None.
    A corrupt or empty last.ckpt falls back to the newest loadable checkpoint of its run folder."""
    if ckpt_path:
        return str(loadable_or_fallback(Path(ckpt_path)))
    found = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    found = [p for p in found if p.is_file()]
    if not found:
        return None
    newest = loadable_or_fallback(max(found, key=lambda p: p.stat().st_mtime), run_dir)
    log.info("resuming from this run folder's checkpoint %s", newest)
    return str(newest)
