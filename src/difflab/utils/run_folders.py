"""Run folders belong to one run: unique names created atomically, and no new run writes into an earlier one.

A default run folder is `runs/<task>/<date>_<time>.<microseconds>_<4 random characters>`; the folder is created
with an exclusive `mkdir` (a name that already exists is drawn again), so two launches in the same second,
or on two nodes sharing the file system, never share a folder; an `-m` sweep folder likewise. A run aimed at an
existing run folder (`hydra.run.dir=` or `paths.run_dir=` naming one) is refused unless it resumes that run
explicitly (`ckpt_path=` a checkpoint inside it) or is the same SLURM job come back after a requeue.
"""

from __future__ import annotations

import os
import secrets
import string
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from difflab.errors import UnwritableOutputError
from difflab.utils.files import create_folder, unwritable

# What Hydra itself writes into a run folder before the task starts (not a sign of an earlier run).
HYDRA_OWN = (".hydra",)
STAMP_ATTEMPTS = 20


def run_stamp() -> str:
    """`${run_stamp:}`: '2026-12-01_08-30-12.123456_k3f9', the time to the microsecond and 4 random characters."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S.%f}_{suffix}"


def holds_a_run(folder: str | Path) -> bool:
    """Whether `folder` holds anything besides what Hydra writes before a task starts (.hydra/, <task>.log)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return any(p.name not in HYDRA_OWN and p.suffix != ".log" for p in folder.iterdir())


def slurm_requeue() -> bool:
    """True in a SLURM job that was requeued (preempted or timed out): it comes back to its own run folder."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_run_folder(run_dir: str | Path, ckpt_path: str | None = None) -> None:
    """Refuse to start a new run in a folder that holds another run (UnwritableOutputError), unless `ckpt_path`
    resumes a checkpoint of that folder or this is a requeued SLURM job."""
    run_dir = Path(run_dir)
    if not holds_a_run(run_dir) or slurm_requeue() or (ckpt_path and _inside(Path(ckpt_path), run_dir)):
        return
    last = run_dir / "checkpoints" / "last.ckpt"
    raise UnwritableOutputError(
        f"The run folder '{run_dir}' already holds a run (hydra.run.dir / paths.run_dir); a new run never writes "
        f"into another run's folder. To continue that run, add ckpt_path={last}"
        f"{'' if last.is_file() else ' (or another checkpoint of that folder)'}; to start a new run, leave "
        "hydra.run.dir and paths.run_dir unset (every run gets its own folder) or name an empty folder.")


def make_unique_folder(cfg: DictConfig, key: str, user_key: str = "paths.runs_dir") -> Path:
    """Create the folder that `cfg.<key>` resolves to with an exclusive mkdir; when the name exists already (and
    it comes from `${run_stamp:}`), draw a new stamp and try again. Returns the folder. A folder that cannot be
    created is an UnwritableOutputError naming it and `user_key` (the key a user sets: `paths.runs_dir`)."""
    parent, leaf = key.rsplit(".", 1)
    stamped = "${run_stamp:" in str(OmegaConf.to_container(OmegaConf.select(cfg, parent), resolve=False)[leaf])
    for _ in range(STAMP_ATTEMPTS):
        folder = Path(str(OmegaConf.select(cfg, key)))
        create_folder(folder.parent, user_key)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            if not stamped:
                return folder
            OmegaConf.clear_cache(cfg)  # the cached stamp (Hydra copies the cache into every job's config)
        except OSError as err:
            raise unwritable(err, folder, user_key, "create the folder") from None
    raise UnwritableOutputError(f"Could not create a new run folder next to '{folder}' (config key `{key}`) after "
                                f"{STAMP_ATTEMPTS} attempts; check that its parent folder is writable.")
