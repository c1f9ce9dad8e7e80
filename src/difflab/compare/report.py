"""The comparison of a set of runs as files: comparison.md, comparison.csv, the FID-vs-cost plots and the gallery."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from difflab.compare.gallery import GALLERY, write_gallery
from difflab.compare.plots import PLOTS, write_plots
from difflab.compare.table import build_table, to_csv, to_markdown
from difflab.errors import UnwritableOutputError
from difflab.utils.files import output_path, write_text

log = logging.getLogger(__name__)

NOTE = ("FID/KID/IS depend on the number of samples and the reference set: compare rows with the same data "
        "and `samples` only. `–`: not computed.")


FILES = ("comparison.md", "comparison.csv", *PLOTS.values(), GALLERY)


def check_out_dir(out_dir: Path, overwrite: bool, key: str = "out_dir") -> None:
    """Before anything is written: the comparison's files in `out_dir` are regular files or absent (no device, no
    symbolic link), and absent unless `overwrite`; an UnwritableOutputError naming the folder and the fix."""
    for name in FILES:
        output_path(out_dir / name, key, overwrite=True)
    earlier = [name for name in FILES if (out_dir / name).exists()]
    if earlier and not overwrite:
        raise UnwritableOutputError(f"The output folder '{out_dir}' (config key `{key}`) already holds a comparison "
                                    f"({', '.join(earlier)}); nothing is overwritten. Pass another {key}=<folder>, or "
                                    "overwrite=true to replace it.")


def write_comparison(records: list[dict[str, Any]], out_dir: Path, source: str, root: Path | None,
                     overwrite: bool = False, key: str = "out_dir",
                     ) -> tuple[list[dict[str, Any]], dict[str, Path], dict[str, Path]]:
    """Rows, comparison.md, comparison.csv, the two plots and the gallery in out_dir (`key`: its config key); an
    earlier comparison there is replaced only with `overwrite`. Returns (rows, all paths, image paths: the plots and
    the gallery)."""
    check_out_dir(out_dir, overwrite, key)
    if not records:
        log.warning("no metrics.json records in %s: the table is empty", source)
    rows = build_table(records)
    table = to_markdown(rows, root=root)
    paths = {"markdown": out_dir / "comparison.md", "csv": out_dir / "comparison.csv"}
    write_text(paths["markdown"], f"# Comparison\n\n{len(rows)} runs from {source}.\n\n{table}\n{NOTE}\n", key=key,
               overwrite=True)
    to_csv(rows, paths["csv"], key)
    plots = write_plots(rows, out_dir, key)
    gallery = write_gallery(rows, out_dir / GALLERY, key=key)
    if gallery is not None:
        plots["gallery"] = gallery
    paths.update(plots)
    log.info("%d runs from %s\n%s", len(rows), source, table)
    return rows, paths, plots
