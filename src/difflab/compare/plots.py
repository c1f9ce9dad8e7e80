"""FID against NFE and against sampling throughput, one series per (variant, scheduler, sampler); W&B logging.

Figures are drawn with matplotlib's object API on the Agg canvas, so no pyplot state or display is touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from difflab.compare.gallery import row_label
from difflab.compare.table import MISSING, Row, columns
from difflab.utils.files import write_output

PLOTS = {"fid_vs_nfe": "fid_vs_nfe.png", "fid_vs_samples_per_sec": "fid_vs_samples_per_sec.png"}


def fid_series(rows: Sequence[Row], x: str) -> dict[str, list[tuple[float, float, Row]]]:
    """(x, FID, row) points per (variant, scheduler, sampler) label, sorted by x; rows without FID or x > 0 skipped.

    The data set prefixes the label when the rows span more than one (FIDs of different data sets differ in kind).
    """
    with_fid = [r for r in rows if r.get("fid") is not None]
    several_data = len({r.get("data") for r in with_fid}) > 1
    series: dict[str, list[tuple[float, float, Row]]] = {}
    for row in with_fid:
        if row.get(x) is None or not row[x] > 0:
            continue
        label = " / ".join(str(row.get(k) or MISSING) for k in ("variant", "scheduler", "sampler"))
        label = f"{row.get('data')}: {label}" if several_data else label
        series.setdefault(label, []).append((float(row[x]), float(row["fid"]), row))
    return {k: sorted(v, key=lambda p: p[:2]) for k, v in sorted(series.items())}


def _plot_fid(rows: Sequence[Row], path: str | Path, x: str, xlabel: str, annotate_nfe: bool,
              key: str | None = None) -> Path:
    from matplotlib.figure import Figure  # the Agg backend is chosen before pyplot is imported; only plots need it

    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    series = fid_series(rows, x)
    if not series:
        has_fid = any(r.get("fid") is not None for r in rows)
        ax.text(0.5, 0.5, f"no FID values with {xlabel}" if has_fid else "no FID values",
                ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for label, points in series.items():
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, marker="o", label=label)
            if annotate_nfe:
                for px, py, row in points:
                    if row.get("nfe") is not None:
                        ax.annotate(f"{row['nfe']:g}", (px, py), textcoords="offset points", xytext=(4, 4),
                                    fontsize="x-small")
        ax.set_xscale("log")
        ax.set_xlabel(f"{xlabel} (log scale)")
        ax.set_ylabel("FID ↓")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title(f"FID vs {xlabel}" + (" (labels: NFE)" if annotate_nfe and series else ""))
    return write_output(path, lambda file: fig.savefig(file, format="png", dpi=120, bbox_inches="tight"), key=key,
                        overwrite=True)


def plot_fid_vs_nfe(rows: Sequence[Row], path: str | Path, key: str | None = None) -> Path:
    """FID against network evaluations per sample (log x); a PNG saying so when no row has FID."""
    return _plot_fid(rows, path, "nfe", "NFE", annotate_nfe=False, key=key)


def plot_fid_vs_throughput(rows: Sequence[Row], path: str | Path, key: str | None = None) -> Path:
    """FID against sampling throughput in samples/sec (log x), points labelled with their NFE."""
    return _plot_fid(rows, path, "samples_per_sec", "samples/sec", annotate_nfe=True, key=key)


def write_plots(rows: Sequence[Row], out_dir: str | Path, key: str | None = None) -> dict[str, Path]:
    """Both plots into out_dir as fid_vs_nfe.png and fid_vs_samples_per_sec.png (`key`: the folder's config key)."""
    out_dir = Path(out_dir)
    return {"fid_vs_nfe": plot_fid_vs_nfe(rows, out_dir / PLOTS["fid_vs_nfe"], key),
            "fid_vs_samples_per_sec": plot_fid_vs_throughput(rows, out_dir / PLOTS["fid_vs_samples_per_sec"], key)}


def log_wandb_table(rows: Sequence[Row], logger_or_run: Any, plots: Mapping[str, str | Path] | None = None) -> None:
    """Log the rows as the W&B table "comparison" and the plots as images to a run (or a Lightning WandbLogger).

    The table's last column, "samples", holds each row's sample strip as an image (None where a row has none).
    `plots` maps names to PNG files already written (the gallery among them); without it the two FID plots are
    drawn into a temporary folder.
    """
    import wandb  # heavy to import; only runs that log to W&B need it

    run = getattr(logger_or_run, "experiment", logger_or_run)

    def samples(row: Row) -> Any:
        strip = row.get("samples")
        return wandb.Image(str(strip), caption=row_label(row)) if strip and Path(strip).is_file() else None

    table = wandb.Table(columns=[*columns(), "samples"], data=[[*(row.get(c) for c in columns()), samples(row)]
                                                             for row in rows])
    with tempfile.TemporaryDirectory() as tmp:
        files = dict(plots) if plots is not None else write_plots(rows, tmp)
        run.log({"comparison": table, **{name: wandb.Image(str(path)) for name, path in files.items()}})
