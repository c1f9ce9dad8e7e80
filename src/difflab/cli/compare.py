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

from omegaconf import DictConfig

from difflab.cli import checks
from difflab.compare import build_table, collect_local, collect_wandb, log_wandb_table, to_csv, to_markdown, write_plots
from difflab.compare.gallery import GALLERY, write_gallery
from difflab.utils.config import instantiate_group

log = logging.getLogger(__name__)

NOTE = ("FID/KID/IS depend on the number of samples and the reference set: compare rows with the same data "
        "and `samples` only. `–`: not computed.")


def _is_wandb(logger: Any) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def write_comparison(records: list[dict[str, Any]], out_dir: Path, source: str,
                     root: Path | None) -> tuple[list[dict[str, Any]], dict[str, Path], dict[str, Path]]:
    """Rows, comparison.md, comparison.csv, the two plots and the gallery in out_dir; returns (rows, all paths,
    image paths: the plots and the gallery)."""
    if not records:
        log.warning("no metrics.json records in %s: the table is empty", source)
    rows = build_table(records)
    table = to_markdown(rows, root=root)
    paths = {"markdown": out_dir / "comparison.md", "csv": out_dir / "comparison.csv"}
    paths["markdown"].write_text(f"# Comparison\n\n{len(rows)} runs from {source}.\n\n{table}\n{NOTE}\n")
    to_csv(rows, paths["csv"])
    plots = write_plots(rows, out_dir)
    gallery = write_gallery(rows, out_dir / GALLERY)
    if gallery is not None:
        plots["gallery"] = gallery
    paths.update(plots)
    log.info("%d runs from %s\n%s", len(rows), source, table)
    return rows, paths, plots


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
    rows, paths, plots = write_comparison(records, out_dir, source, root)
    for logger in instantiate_group(cfg.get("logger")):
        if _is_wandb(logger):
            log_wandb_table(rows, logger.experiment, plots=plots)
            logger.experiment.finish()
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {"rows": rows, "paths": paths, "out_dir": out_dir}


def main() -> None:
    """`difflab-compare [runs_dir=...]` (`python compare.py`): tabulate every run's metrics.json."""
    from difflab.cli.entry import hydra_main

    hydra_main("compare", run, __name__, aliases=False)
