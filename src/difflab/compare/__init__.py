"""Comparing variants: every metrics.json (or a W&B project) as one table, CSV, FID-vs-cost plots and a gallery."""

from difflab.compare.gallery import write_gallery
from difflab.compare.plots import (
    fid_series,
    log_wandb_table,
    plot_fid_vs_nfe,
    plot_fid_vs_throughput,
    write_plots,
)
from difflab.compare.report import write_comparison
from difflab.compare.table import (
    build_table,
    check_record,
    collect_local,
    collect_wandb,
    columns,
    record_from_wandb,
    to_csv,
    to_markdown,
)

__all__ = [
    "build_table",
    "check_record",
    "collect_local",
    "collect_wandb",
    "columns",
    "fid_series",
    "log_wandb_table",
    "plot_fid_vs_nfe",
    "plot_fid_vs_throughput",
    "record_from_wandb",
    "to_csv",
    "to_markdown",
    "write_comparison",
    "write_gallery",
    "write_plots",
]
