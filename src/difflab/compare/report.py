"""The comparison of a set of runs as files: comparison.md, comparison.csv, the FID-vs-cost plots and the gallery."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from difflab.compare.gallery import GALLERY, write_gallery
from difflab.compare.plots import write_plots
from difflab.compare.table import build_table, to_csv, to_markdown

log = logging.getLogger(__name__)

NOTE = ("FID/KID/IS depend on the number of samples and the reference set: compare rows with the same data "
        "and `samples` only. `–`: not computed.")


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
