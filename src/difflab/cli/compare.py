"""`python compare.py`: every run's metrics.json (or a W&B project) as one table, a CSV and FID-vs-cost plots.

Writes `comparison.md`, `comparison.csv`, `fid_vs_nfe.png`, `fid_vs_samples_per_sec.png` and, when runs have
sample strips, `gallery.png` (a row of samples per run) into `out_dir`; with a W&B logger, logs the table as
"comparison" (with a column of sample images) plus the plots and the gallery. The compare run's own folder
lies under `runs_dir` but holds no metrics.json, so later comparisons do not pick it up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from difflab.api import checks
from difflab.compare import collect_local, collect_wandb, log_wandb_table, write_comparison
from difflab.utils.loggers import task_loggers
from difflab.utils.entry import hydra_main

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Collect the records, write the table, CSV and plots to out_dir, log them; returns the paths and rows."""
    out_dir = checks.writable_folder(cfg.out_dir, "out_dir")
    if cfg.get("wandb_project"):
        entity = cfg.get("wandb_entity")
        records = collect_wandb(str(cfg.wandb_project), str(entity) if entity else None)
        source, root = f"W&B project {entity + '/' if entity else ''}{cfg.wandb_project}", None
    else:
        records = collect_local(cfg.runs_dir)
        source, root = f"{Path(cfg.runs_dir).resolve()}", Path(cfg.runs_dir)
    rows, paths, plots = write_comparison(records, out_dir, source, root, overwrite=bool(cfg.get("overwrite", False)))
    with task_loggers(cfg.get("logger")) as loggers:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                log_wandb_table(rows, logger.experiment, plots=plots)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {"rows": rows, "paths": paths, "out_dir": out_dir}


def main() -> None:
    """`difflab-compare [runs_dir=...]` (`python compare.py`): tabulate every run's metrics.json."""
    hydra_main("compare", run, __name__)
