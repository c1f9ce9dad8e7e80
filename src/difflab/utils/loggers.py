"""Experiment loggers: W&B (online with a key, offline without), CSV and TensorBoard, all whole across resumes.

A resumed run (`ckpt_path=`, or a requeued job) continues the same logs: `train.py` tells each logger the
global step of the checkpoint (`resume_at_step`), and rows or history entries logged after that step by the
interrupted process are dropped or skipped, so every step appears exactly once.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import secrets
import socket
import string
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from difflab.errors import ConfigError
from difflab.utils.checkpoint_files import load_checkpoint_file
from difflab.utils.cluster import is_rank_zero
from difflab.utils.config import instantiate_group
from difflab.utils.wandb_artifacts import (
    WANDB_ID_FILE,
    link_training_run,
    training_link,
)
from difflab.utils.wandb_history import logged_pairs

log = logging.getLogger(__name__)


def _write_rows_atomically(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv is continued (never deleted) and rewrites are atomic."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        _write_rows_atomically(Path(self.metrics_file_path), fieldnames, rows)

    def drop_from_step(self, step: int) -> int:
        """Delete the rows of steps >= `step` (logged after the checkpoint a run resumes from); returns how many."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return 0
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < step]
        if len(kept) != len(rows):
            _write_rows_atomically(path, self.metrics_keys, kept)
        return len(rows) - len(kept)


class CSVLogger(LightningCSVLogger):
    """CSV metrics in <save_dir>/<name>/metrics.csv, written through at every log call (`flush_logs_every_n_steps`),
    continued across resumes with each step once."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use; continues an existing metrics.csv)."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at_step(self, step: int) -> None:
        """The run continues from a checkpoint of global step `step`: drop the rows logged after it."""
        if is_rank_zero():
            self.experiment.drop_from_step(step)


class TensorBoardLogger(LightningTensorBoardLogger):
    """TensorBoard event files in <save_dir>/<name>/ (`tensorboard --logdir runs/train`); a resumed run purges the
    events logged after its checkpoint (SummaryWriter's `purge_step`), so every step appears once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if find_spec("tensorboard") is None and find_spec("tensorboardX") is None:
            raise ConfigError.bad_value("logger", "logger=tensorboard needs the tensorboard package, which is not "
                                        "installed", "Run `pip install tensorboard` (or `pip install difflab[tensorboard]`), "
                                        "or pick logger=csv or logger=wandb.")
        super().__init__(*args, **kwargs)

    def resume_at_step(self, step: int) -> None:
        """The run continues from a checkpoint of global step `step`: TensorBoard hides the events at steps >= `step`."""
        if self._experiment is not None:
            raise RuntimeError("internal error: resume_at_step after the TensorBoard writer was created")
        self._kwargs["purge_step"] = step


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




def wandb_run_id(save_dir: str | Path, resume_from: str | None = None) -> str | None:
    """The W&B run id of this run folder: the one stored in `save_dir` (a requeued job), else the one of
    the run folder that `resume_from` (a checkpoint) belongs to, else a new one; stored in `save_dir`.
    Only rank 0 logs to W&B: other ranks get None and write nothing."""
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


def wandb_unreachable(timeout: float = 10.0) -> str | None:
    """None when the W&B server ($WANDB_BASE_URL, else api.wandb.ai; through $HTTPS_PROXY when set) accepts a TCP
    connection within `timeout` seconds (name lookup included), else why not."""
    url = urlparse(os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
                   or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{host}:{port} cannot be reached ({err})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout:.0f} s"


WANDB_JOURNAL = "wandb_history.jsonl"


def _scalars(metrics: Any) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "numel") and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _read_journal(path: Path) -> list[dict[str, float]]:
    entries = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # the line a kill cut off
                break
    return entries


class ResumableWandbLogger(WandbLogger):
    """Lightning's WandbLogger that logs every scalar once per step across kills and resumes.

    Each logged scalar also goes to `<run>/wandb_history.jsonl` (appended at once; W&B buffers its own files, and a
    SIGKILL loses what it had not written). On `resume_at_step(n)` the history in the run's W&B transaction logs is
    read back: journal entries of steps < n that W&B lost are logged again, journal entries of steps >= n are dropped
    (training logs them again), and from then on a (key, step) already in W&B's history is not logged twice."""

    def __init__(self, *args: Any, run_dirs: list[Path] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run_dirs = run_dirs or [Path(self.save_dir)]
        self._journal = self._run_dirs[0] / WANDB_JOURNAL
        self._written: set[tuple[str, int]] = set()

    def resume_at_step(self, step: int) -> None:
        """The run continues from a checkpoint of global step `step`: complete W&B's history up to it."""
        if not self._id:
            return
        self._written = logged_pairs([d / "wandb" for d in self._run_dirs], self._id)
        lost: dict[tuple[str, int], float] = {}
        for folder in dict.fromkeys(d.resolve() for d in self._run_dirs):
            for entry in _read_journal(folder / WANDB_JOURNAL):
                at = int(entry.pop("step"))
                lost.update({(k, at): v for k, v in entry.items() if at < step and (k, at) not in self._written})
        tmp = self._journal.with_name(f".{WANDB_JOURNAL}.tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in _read_journal(self._journal) if int(e["step"]) < step))
        os.replace(tmp, self._journal)
        for at in sorted({a for _, a in lost}):
            missing = {k: v for (k, a), v in lost.items() if a == at}
            super().log_metrics(missing, at)
            self._written.update((k, at) for k in missing)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        """Log the values not yet in the run's history at `step` (and journal the scalars)."""
        if step is not None:
            metrics = {k: v for k, v in metrics.items() if (k, step) not in self._written}
            if not metrics:
                return
            scalars = _scalars(metrics)
            if scalars:
                with open(self._journal, "a") as file:
                    file.write(json.dumps({"step": step, **scalars}) + "\n")
        super().log_metrics(metrics, step)


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
    log_model: bool = True,
    evaluates: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning WandbLogger writing under `save_dir`, offline when no API key is configured.

    The run id (`id`, else `wandb_run_id(save_dir, resume_from)`) is kept in `save_dir/wandb_id.txt`,
    so a resumed or requeued run continues the same W&B run; the group is `group`, else the run id. `log_model`:
    train.py logs the final last/best checkpoints as artifacts (online or offline, `utils/wandb_artifacts.py`).
    `evaluates` (a checkpoint; evaluate.py, sample.py) links this run to the W&B run that trained it."""
    if not isinstance(log_model, bool):
        raise ConfigError.bad_value("logger.wandb.log_model", f"{log_model!r} is not true or false",
                                    "Pass logger.wandb.log_model=true (the final last/best checkpoints as artifacts) "
                                    "or false.")
    link = _training_link(evaluates)
    mode = resolve_wandb_mode(mode)
    why = wandb_unreachable() if mode == "online" else None
    if why:
        log.warning("W&B: an API key is configured but the server is unreachable (%s); logging offline to %s/wandb "
                    "instead (upload later with `wandb sync`)", why, save_dir)
        mode = "offline"
    os.environ["WANDB_MODE"] = mode
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run_id = id or wandb_run_id(save_dir, resume_from)
    group = group or (link or {}).get("group") or run_id  # a training run's group holds its evaluations
    run_dirs = [Path(save_dir)]
    if resume_from:  # a run resumed in a new folder continues the W&B run of the checkpoint's folder
        ckpt = Path(resume_from).resolve()
        run_dirs += [ckpt.parent, ckpt.parent.parent]
    logger = ResumableWandbLogger(
        save_dir=save_dir, project=project, name=name, group=group, job_type=job_type,
        tags=list(tags or []), offline=(mode == "offline"), mode=mode, id=run_id, resume="allow",
        run_dirs=run_dirs, **kwargs,
    )
    logger.log_model_artifacts = log_model  # read by train.py (Lightning's own log_model refuses offline runs)
    if link is not None and run_id is not None:
        link_training_run(logger, link)
    return logger


def _training_link(ckpt: str | None) -> dict[str, Any] | None:
    """The W&B training run of checkpoint `ckpt` (None without one, or when that run did not use W&B)."""
    if not ckpt or not Path(ckpt).is_file():
        return None
    config = load_checkpoint_file(ckpt, key="ckpt", mmap=True).get("config")
    return training_link(ckpt, config if isinstance(config, dict) else None)


def close_loggers(loggers: Iterable[Any], failed: bool = False) -> None:
    """End every logger of a task: a W&B run is finished (its files synced; marked failed after an error), the others
    flush their files."""
    for logger in loggers:
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish(**({"exit_code": 1} if failed else {}))
        elif hasattr(logger, "save"):
            logger.save()


@contextmanager
def task_loggers(group: Any) -> Iterator[list[Any]]:
    """The loggers of a command's `logger` config group, opened for the task and closed at its end whatever happens
    (every command's one place where loggers are made and ended)."""
    loggers = instantiate_group(group)
    try:
        yield loggers
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers)
