"""The Runs tab: the comparison table of `python compare.py` (`difflab.compare`), each run's final sample grid,
and the FID-vs-NFE plot, read from the runs folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from difflab.compare import build_table, collect_local, plot_fid_vs_nfe
from difflab.compare.table import LEADING, Row, header
from difflab.metrics.registry import load_all
from difflab.studio.files import Folders, OutsideFoldersError, png

TEXT = {"variant", "scheduler", "sampler", "data", "run_dir"}


def shown() -> list[str]:
    """The table's columns: what ran, every metric the registry shows in the studio (`studio=True`), then the images
    seen, data and run."""
    return [*LEADING, *(m.name for m in load_all().values() if m.studio), "train_images_seen", "data", "run_dir"]
GRIDS = ("samples/final.png", "metrics/final.png", "grid.png")  # train.py's end-of-training grid first


def headers() -> list[str]:
    """The table's column headers (compare.py's names: `FID ↓`, `NFE`, ...)."""
    return [header(c) for c in shown()]


def datatypes() -> list[str]:
    """Gradio's datatype of each column (numbers sort as numbers)."""
    return ["str" if c in TEXT else "number" for c in shown()]


def _cell(column: str, value: Any, folders: Folders) -> Any:
    if column == "run_dir":
        return folders.label(value) if value else ""
    if value is None:
        return None if column not in TEXT else ""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.4g}")
    return value


def read_runs(folders: Folders) -> list[Row]:
    """Every run under the runs folder as compare.py's rows (`build_table` over every metrics.json)."""
    return build_table(collect_local(folders.runs_dir))


def table_values(rows: list[Row], folders: Folders) -> list[list[Any]]:
    """The rows as the page's table cells, in the order of `shown()`."""
    return [[_cell(c, row.get(c), folders) for c in shown()] for row in rows]


def run_grid(run_dir: str | Path, folders: Folders) -> Path | None:
    """The final sample grid of a run folder (train.py's samples/final.png, else the newest grid it wrote), or None;
    the folder and the file must lie inside the served folders."""
    folder = folders.check(run_dir, "run folder")
    for name in GRIDS:
        if (folder / name).is_file():
            return folders.check(folder / name, "sample grid")
    grids = sorted((folder / "samples").glob("*.png"), key=lambda p: p.stat().st_mtime)
    return folders.check(grids[-1], "sample grid") if grids else None


def grids_of(rows: list[Row], labels: list[str], folders: Folders) -> list[tuple[np.ndarray, str]]:
    """(grid image, caption) of the runs named by `labels` (their `run_dir` labels), in that order; runs without a
    grid, or whose grid lies outside the served folders, are left out."""
    by_label = {folders.label(r["run_dir"]): r for r in rows if r.get("run_dir")}
    out = []
    for label in labels:
        row = by_label.get(label)
        if row is None:
            continue
        try:
            grid = run_grid(row["run_dir"], folders)
        except OutsideFoldersError:
            continue
        if grid is not None:
            caption = " / ".join(str(row.get(k) or "–") for k in ("variant", "scheduler", "sampler"))
            out.append((png(grid), f"{caption} · {label}"))
    return out


def fid_plot(rows: list[Row], out_dir: Path) -> np.ndarray:
    """compare.py's FID-vs-NFE plot of the rows, drawn into out_dir (a figure saying so when no row has FID)."""
    return png(plot_fid_vs_nfe(rows, out_dir / "fid_vs_nfe.png"))
